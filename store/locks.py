"""Ref locks: the protocol a lock backend implements, and the host-local file lock.

A lock only makes duplicate work rare; the store stays correct without it (see DESIGN.md).
:class:`FileRefLocker` excludes threads of one process and processes of one host (flock,
released by the kernel when the holder dies). A Redis lease (``tasks``) implements the
same protocol for many hosts; :class:`ChainLocker` takes several in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

import filelock

import errdefs
from store.values import Holder, utcnow


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


def new_holder_id() -> str:
    """A unique id for one writer: ``host/pid/random``."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


def ref_key(ref: str) -> str:
    """The hex sha256 of ``ref``: how a ref names files, so no ref can escape the root."""
    return hashlib.sha256(ref.encode("utf-8", "surrogatepass")).hexdigest()


def locked_error(ref: str, since: datetime | None) -> errdefs.Unavailable:
    """containerd's lock error: ``ref <ref> locked for <duration> (since <time>)``."""
    if since is None:
        return errdefs.Unavailable(f"ref {ref} locked")
    held = max((utcnow() - since).total_seconds(), 0.0)
    return errdefs.Unavailable(f"ref {ref} locked for {held:.3f}s (since {since.isoformat()})")


def holder_to_json(h: Holder) -> str:
    """Serialize a Holder for a lock file or a Redis hash."""
    return json.dumps(
        {
            "id": h.id,
            "host": h.host,
            "pid": h.pid,
            "acquired_at": h.acquired_at.isoformat(),
            "heartbeat_at": h.heartbeat_at.isoformat(),
            "fence": h.fence,
        }
    )


def holder_from_json(text: str) -> Holder | None:
    """Parse :func:`holder_to_json`'s output; None if it is unreadable."""
    try:
        d = json.loads(text)
        return Holder(
            id=str(d["id"]),
            host=str(d["host"]),
            pid=int(d["pid"]),
            acquired_at=datetime.fromisoformat(d["acquired_at"]),
            heartbeat_at=datetime.fromisoformat(d["heartbeat_at"]),
            fence=int(d.get("fence", 0)),
        )
    except (ValueError, KeyError, TypeError):
        return None


class _FileLease:
    def __init__(self, locker: FileRefLocker, key: str, lock: filelock.BaseFileLock, h: Holder):
        self._locker = locker
        self._key = key
        self._lock = lock
        self._holder = h
        self._released = False

    @property
    def holder(self) -> Holder:
        return self._holder

    def check(self) -> None:
        if self._released:
            raise errdefs.FailedPrecondition("ref lock already released")

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._locker._release(self._key, self._lock)


class FileRefLocker:
    """Host-local ref locks: a flock per ref under ``<dir>/<sha256(ref)>.lock`` plus an
    in-process table, so threads of one process exclude each other too."""

    def __init__(self, directory: Path) -> None:
        self._dir = Path(directory)
        self._mutex = threading.Lock()
        self._held: dict[str, datetime] = {}

    def _paths(self, ref: str) -> tuple[str, Path, Path]:
        key = ref_key(ref)
        return key, self._dir / f"{key}.lock", self._dir / f"{key}.holder"

    def try_lock(self, ref: str, holder_id: str) -> Lease:
        key, lock_path, holder_path = self._paths(ref)
        with self._mutex:
            since = self._held.get(key)
            if since is not None:
                raise locked_error(ref, since)
            self._held[key] = utcnow()
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            lock = filelock.FileLock(lock_path, thread_local=False, is_singleton=False)
            try:
                lock.acquire(blocking=False)
            except filelock.Timeout:
                other = self._read_holder(holder_path)
                raise locked_error(ref, other.acquired_at if other else None) from None
            now = utcnow()
            h = Holder(
                id=holder_id,
                host=socket.gethostname(),
                pid=os.getpid(),
                acquired_at=now,
                heartbeat_at=now,
            )
            tmp = holder_path.with_suffix(f".tmp.{uuid.uuid4().hex[:8]}")
            tmp.write_text(holder_to_json(h))
            os.replace(tmp, holder_path)
            return _FileLease(self, key, lock, h)
        except BaseException:
            with self._mutex:
                self._held.pop(key, None)
            raise

    def holder(self, ref: str) -> Holder | None:
        key, lock_path, holder_path = self._paths(ref)
        with self._mutex:
            if key in self._held:
                return self._read_holder(holder_path)
        if not lock_path.exists():
            return None
        probe = filelock.FileLock(lock_path, thread_local=False, is_singleton=False)
        try:
            probe.acquire(blocking=False)
        except filelock.Timeout:
            return self._read_holder(holder_path)
        probe.release()
        return None

    @staticmethod
    def _read_holder(path: Path) -> Holder | None:
        try:
            return holder_from_json(path.read_text())
        except OSError:
            return None

    def _release(self, key: str, lock: filelock.BaseFileLock) -> None:
        try:
            lock.release(force=True)
        finally:
            with self._mutex:
                self._held.pop(key, None)


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

    def try_lock(self, ref: str, holder_id: str) -> Lease:
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
        found: Holder | None = None
        for locker in self._lockers:
            h = locker.holder(ref)
            if h is not None:
                found = h
        return found
