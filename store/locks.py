"""Ref locks: the protocol a lock backend implements, and the host-local file lock.

A lock only makes duplicate work rare; the store stays correct without it (see DESIGN.md).
:class:`FileRefLocker` excludes threads of one process and processes of one host (a lock
file per ref, released by the kernel when the holder dies; see :mod:`ingestq.store.lockfile`).
A Redis lease (``tasks``) implements the same protocol for many hosts;
:class:`ChainLocker` takes several in order.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, cast, runtime_checkable

from ingestq import errdefs
from ingestq.store.codec import holder_from_json, holder_to_json
from ingestq.store.layout import ref_key, ref_lock_name
from ingestq.store.lockfile import HAVE_OFD, LockFile, probe
from ingestq.store.oserrors import from_os_error
from ingestq.store.values import Holder, utcnow


class Lease(Protocol):
    """A held ref lock."""

    @property
    def holder(self) -> Holder:
        """Who holds it (this process) and its last heartbeat."""
        ...

    def check(self) -> None:
        """Raise FailedPrecondition if the lock has been lost (an expired lease)."""
        ...

    def release(self) -> None:
        """Give the lock up. Releasing twice is fine."""
        ...


class RefLocker(Protocol):
    """Hands out exclusive locks on refs."""

    def try_lock(self, ref: str, holder_id: str) -> Lease:
        """Take ``ref``'s lock at once or raise Unavailable naming the ref, how long it has
        been held and since when."""
        ...

    def holder(self, ref: str) -> Holder | None:
        """Who holds ``ref`` now, or None."""
        ...


@runtime_checkable
class SpanningLocker(Protocol):
    """A :class:`RefLocker` that names the lock domains it takes its locks in: two
    lockers exclude each other exactly when their domains meet (the same host's lock
    directory, the same Redis)."""

    @property
    def domains(self) -> frozenset[str]:
        """Names of the places its locks live, without credentials."""
        ...


def lock_domains(locker: RefLocker) -> frozenset[str]:
    """``locker``'s domains (:class:`SpanningLocker`); for another locker, one that is
    its own alone (it excludes only the users of this very object)."""
    # Not isinstance(locker, SpanningLocker): on Python 3.11 that evaluates the
    # property (a Redis round trip) just to see that it exists.
    if isinstance(getattr(type(locker), "domains", None), property):
        return cast(SpanningLocker, locker).domains
    return own_domain(locker)


def own_domain(locker: object) -> frozenset[str]:
    """A domain of ``locker`` alone, which no other locker names."""
    return frozenset({f"object://{socket.gethostname()}/{os.getpid()}/{id(locker):x}"})


def shared_domains(locker: RefLocker) -> frozenset[str]:
    """The domains ``locker`` takes its locks in on every host: what a job that goes on
    on other hosts (a queued pull, finalized by any worker) excludes others with each
    time. A :class:`ChainLocker`'s cross-host lockers' domains, without its
    :class:`FileRefLocker`'s (that host's lock directory, which a worker elsewhere does
    not take); when nothing is left, :func:`own_domain` (no gc shares it)."""
    if isinstance(locker, ChainLocker):
        shared = frozenset[str]().union(
            *(lock_domains(each) for each in locker.lockers if not isinstance(each, FileRefLocker))
        )
    elif isinstance(locker, FileRefLocker):
        shared = frozenset()
    else:
        shared = lock_domains(locker)
    return shared or own_domain(locker)


def new_holder_id() -> str:
    """A unique id for one writer: ``host/pid/random``."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


def locked_error(
    ref: str, since: datetime | None, holder: Holder | None = None
) -> errdefs.Unavailable:
    """containerd's lock error, ``ref <ref> locked for <duration> (since <time>)``; the
    details carry ``ref`` and, when known, ``since`` and the ``holder`` id."""
    details = {"ref": ref}
    if holder is not None and holder.id:
        details["holder"] = holder.id
    if since is None:
        return errdefs.Unavailable(f"ref {ref} locked", details)
    details["since"] = since.isoformat()
    held = max((utcnow() - since).total_seconds(), 0.0)
    return errdefs.Unavailable(
        f"ref {ref} locked for {held:.3f}s (since {since.isoformat()})", details
    )


class _FileLease:
    """A held :class:`FileRefLocker` lock."""

    def __init__(self, lock: LockFile, holder: Holder) -> None:
        self._lock = lock
        self._holder = holder
        self._mutex = threading.Lock()

    @property
    def holder(self) -> Holder:
        return self._holder

    def check(self) -> None:
        if not self._lock.held:
            raise errdefs.FailedPrecondition("ref lock already released")

    def release(self) -> None:
        with self._mutex:
            self._lock.release()


class FileRefLocker:
    """Host-local ref locks: one lock file per ref, ``<dir>/ref-<sha256(ref)>.lock``.

    Excludes threads of one process and processes of one host (and of one shared
    filesystem where it supports OFD/POSIX locks). The kernel releases a lock when its
    holder dies, so a killed writer's ref is free at once. The file carries the holder's
    JSON, and :meth:`holder` reads it without disturbing the lock. ``use_ofd=False``
    forces the ``flock`` fallback used where OFD locks do not exist.
    """

    def __init__(self, directory: str | os.PathLike[str], *, use_ofd: bool = HAVE_OFD) -> None:
        self._dir = Path(directory)
        self._use_ofd = use_ofd

    @property
    def domains(self) -> frozenset[str]:
        """This host's lock directory: ``file://<hostname><absolute dir>``."""
        return frozenset({f"file://{socket.gethostname()}{self._dir.absolute()}"})

    def path(self, ref: str) -> Path:
        """The lock file of ``ref``."""
        return self._dir / ref_lock_name(ref)

    def try_lock(self, ref: str, holder_id: str) -> Lease:
        """Take ``ref``'s lock or raise Unavailable (``ref <ref> locked for <duration>
        (since <time>)``). PermissionDenied / ResourceExhausted when the lock file
        cannot be created."""
        path = self.path(ref)
        lock = LockFile(path, use_ofd=self._use_ofd)
        try:
            try:
                got = lock.acquire(blocking=False)
            except FileNotFoundError:  # the directory is made on first use (or again)
                self._dir.mkdir(parents=True, exist_ok=True)
                got = lock.acquire(blocking=False)
            if not got:
                raise self._locked(ref, path)
            now = utcnow()
            holder = Holder(
                id=holder_id,
                host=socket.gethostname(),
                pid=os.getpid(),
                acquired_at=now,
                heartbeat_at=now,
            )
            lock.write_text(holder_to_json(holder))
        except OSError as e:
            lock.release()
            raise from_os_error(e, f"lock ref {ref}") from e
        except BaseException:
            lock.release()
            raise
        return _FileLease(lock, holder)

    def holder(self, ref: str) -> Holder | None:
        """Who holds ``ref`` now (None if nobody does); never takes the lock (with OFD)."""
        try:
            found = probe(self.path(ref), use_ofd=self._use_ofd)
        except OSError as e:
            raise from_os_error(e, f"probe lock of ref {ref}") from e
        if not found.held:
            return None
        h = holder_from_json(found.text)
        if h is not None:
            return h
        # Locked a moment ago and the holder has not written its record yet.
        since = datetime.fromtimestamp(found.mtime_ns / 1e9, UTC)
        return Holder(id="", host="", pid=0, acquired_at=since, heartbeat_at=since)

    def _locked(self, ref: str, path: Path) -> errdefs.Unavailable:
        found = probe(path, use_ofd=self._use_ofd)
        h = holder_from_json(found.text) if found.held else None
        if h is not None:
            return locked_error(ref, h.acquired_at, h)
        since = datetime.fromtimestamp(found.mtime_ns / 1e9, UTC) if found.mtime_ns else None
        return locked_error(ref, since)


class _ChainLease:
    def __init__(self, leases: Sequence[Lease]) -> None:
        self._leases = list(leases)

    @property
    def holder(self) -> Holder:
        return self._leases[-1].holder

    def check(self) -> None:
        for lease in self._leases:
            lease.check()

    def release(self) -> None:
        errors: list[BaseException] = []
        for lease in reversed(self._leases):
            try:
                lease.release()
            except Exception as e:  # release every lock even if one fails
                errors.append(e)
        if errors:
            raise errors[0]


class ChainLocker:
    """Takes every locker's lock in order (host-local first, then cross-host)."""

    def __init__(self, lockers: Sequence[RefLocker]) -> None:
        self._lockers = list(lockers)

    @property
    def lockers(self) -> tuple[RefLocker, ...]:
        """The chained lockers, in the order their locks are taken."""
        return tuple(self._lockers)

    @property
    def domains(self) -> frozenset[str]:
        """Every chained locker's domains (it excludes whoever shares any of them)."""
        return frozenset().union(*(lock_domains(locker) for locker in self._lockers))

    def try_lock(self, ref: str, holder_id: str) -> Lease:
        """Take every locker's lock in order; on a failure release those taken and
        raise that locker's error (Unavailable when locked)."""
        taken: list[Lease] = []
        try:
            for locker in self._lockers:
                taken.append(locker.try_lock(ref, holder_id))
        except BaseException:
            for lease in reversed(taken):
                lease.release()
            raise
        return _ChainLease(taken)

    def holder(self, ref: str) -> Holder | None:
        """The holder reported by the last locker that knows one (the widest scope)."""
        found: Holder | None = None
        for locker in self._lockers:
            h = locker.holder(ref)
            if h is not None:
                found = h
        return found


__all__ = [
    "ChainLocker",
    "FileRefLocker",
    "Lease",
    "RefLocker",
    "SpanningLocker",
    "lock_domains",
    "locked_error",
    "new_holder_id",
    "own_domain",
    "ref_key",
    "shared_domains",
]
