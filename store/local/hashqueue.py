"""Hashing that runs behind a writer: pieces already written are fed to the digest, in
order, on a shared thread pool, while the writer goes on with the next piece.

A queued piece must not change until it is hashed: views of ``bytes``, or a buffer its
owner refills only after :meth:`HashQueue.wait_below` says its piece is done (the
digest must cover exactly the bytes the file holds).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor

from ingestq.store.digest import Hasher
from ingestq.store.hashfeed import THROUGH_PIECE, feed


class HashFailed(Exception):
    """A queued piece could not be hashed (``error``); nothing after it was."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"hashing failed: {error!r}")
        self.error = error


class ForkedWhileHashing(RuntimeError):
    """A process forked while pieces were queued: the child has no thread hashing them."""


class HashQueue:
    """Feeds queued pieces to their hasher one at a time, in the order queued, on
    ``pool()``'s threads. At most ``depth`` pieces wait (:meth:`put` blocks beyond
    that). Not for several producer threads at once."""

    def __init__(self, pool: Callable[[], Executor], depth: int = 4) -> None:
        self._pool = pool
        self._depth = depth
        self._cond = threading.Condition()
        self._pieces: deque[tuple[Hasher, memoryview, bool]] = deque()
        self._running = False
        self._error: BaseException | None = None
        self._buffer: bytearray | None = None  # made by the first put; one _run at a time
        _queues.add(self)

    def put(self, hasher: Hasher, piece: memoryview, *, straight: bool = False) -> None:
        """Queue ``piece`` (unchanged until hashed: module docstring) for ``hasher``;
        ``straight`` hashes it from where it lies (a buffer that is still in a cache)
        rather than by :func:`~ingestq.store.hashfeed.feed`'s choice. HashFailed when an
        earlier piece could not be hashed (nothing more is hashed after it)."""
        if self._buffer is None:  # here, where a MemoryError reaches the caller
            self._buffer = bytearray(THROUGH_PIECE)
        with self._cond:
            while len(self._pieces) >= self._depth and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise HashFailed(self._error)
            self._pieces.append((hasher, piece, straight))
            if not self._running:
                self._running = True
                try:
                    self._pool().submit(self._run)
                except BaseException:
                    self._running = False
                    self._pieces.pop()
                    raise

    def wait(self) -> None:
        """Return once every queued piece is hashed; HashFailed when one could not be.
        An interrupt while waiting leaves the queue running."""
        with self._cond:
            while self._running:
                self._cond.wait()
            if self._error is not None:
                raise HashFailed(self._error)

    def wait_below(self, count: int) -> None:
        """Return once fewer than ``count`` pieces wait to be hashed (so the piece
        queued ``count`` puts ago is done); HashFailed as :meth:`wait`."""
        with self._cond:
            while len(self._pieces) >= count and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise HashFailed(self._error)

    def _run(self) -> None:
        buffer = self._buffer
        assert buffer is not None  # made by put, on the caller's thread
        while True:
            with self._cond:
                if not self._pieces or self._error is not None:
                    self._pieces.clear()
                    self._running = False
                    self._cond.notify_all()
                    return
                hasher, piece, straight = self._pieces[0]
            try:
                if straight:
                    hasher.update(piece)
                else:
                    feed(hasher, piece, buffer)
            except BaseException as e:  # kept for the writer, which must not commit
                with self._cond:
                    self._error = e
                continue
            with self._cond:
                self._pieces.popleft()
                self._cond.notify_all()

    def _after_fork(self) -> None:
        # The parent's helper thread is not in the child: pieces it still had are never
        # hashed here, so the child's writer must not commit (it fails HashFailed).
        self._cond = threading.Condition()
        if self._running:
            self._running = False
            self._pieces.clear()
            self._error = ForkedWhileHashing("forked while pieces were being hashed")


_queues: weakref.WeakSet[HashQueue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for queue in list(_queues):
        queue._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


__all__ = ["ForkedWhileHashing", "HashFailed", "HashQueue"]
