"""Fakes for tests of code that takes ref locks: :class:`FakeRefLocker`."""

from __future__ import annotations

import threading

from ingestq import errdefs
from ingestq.store.locks import locked_error
from ingestq.store.memory import MemoryLease, MemoryRefLocker


class FakeRefLocker(MemoryRefLocker):
    """A :class:`store.locks.RefLocker` in memory with the controls a test needs.

    It locks like :class:`store.memory.MemoryRefLocker` (one holder per ref, Unavailable
    for the others) and also lets a test play the other side of a contention:

    * :attr:`attempts` lists the ref of every ``try_lock`` call, in order;
    * :meth:`hold` takes a ref as another writer would, so the code under test meets a
      locked ref; release the returned lease to free it;
    * :meth:`refuse` makes the next attempts on a ref fail with Unavailable although it
      is free (to test retries without a second writer);
    * :meth:`lose` takes a held lease away, as an expired Redis lease would: its
      ``check()`` raises FailedPrecondition from then on, and the ref is free again.

    Usable as a store's locker (``LocalStore(root, [FakeRefLocker()])``,
    ``MemoryStore(FakeRefLocker())``). Thread-safe.
    """

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[str] = []
        self._refusals: dict[str, int] = {}
        self._fake_mutex = threading.Lock()

    def try_lock(self, ref: str, holder_id: str) -> MemoryLease:
        """Record the attempt, then take ``ref``'s lock or raise Unavailable (also while
        :meth:`refuse` says so)."""
        with self._fake_mutex:
            self.attempts.append(ref)
            left = self._refusals.get(ref, 0)
            if left > 0:
                self._refusals[ref] = left - 1
                raise locked_error(ref, None)
        return super().try_lock(ref, holder_id)

    def hold(self, ref: str, holder_id: str = "another-writer") -> MemoryLease:
        """Hold ``ref`` as another writer (not counted in :attr:`attempts`).
        Unavailable if it is held already."""
        return super().try_lock(ref, holder_id)

    def refuse(self, ref: str, times: int = 1) -> None:
        """Make the next ``times`` attempts on ``ref`` fail with Unavailable."""
        with self._fake_mutex:
            self._refusals[ref] = self._refusals.get(ref, 0) + times

    def lose(self, ref: str) -> MemoryLease:
        """Take ``ref``'s lease from its holder (see the class docstring) and return
        it. NotFound if nobody holds ``ref``."""
        lease = self._drop(ref)
        if lease is None:
            raise errdefs.NotFound(f"no lease on ref {ref}")
        return lease


__all__ = ["FakeRefLocker"]
