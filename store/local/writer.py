"""The local store's Writer: one owned data file, hashed as it is written."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

import errdefs
from store import labels as labelrules
from store.digest import CANONICAL, Digest, Hasher, new_hasher
from store.local.ingest import IngestDir, write_atomic
from store.locks import Lease
from store.oserrors import from_os_error
from store.values import Info, Status, utcnow

if TYPE_CHECKING:
    from store.local.store import LocalStore

_COPY_CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or link in it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalWriter:
    """A write into ``ingest/<H>/data.<id>``. Created by :meth:`LocalStore.writer`."""

    def __init__(
        self,
        store: LocalStore,
        ref: str,
        ingest: IngestDir,
        lease: Lease,
        data_path: Path,
        fd: int,
        hasher: Hasher,
        offset: int,
        total: int,
        expected: Digest | None,
        started_at: datetime,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._ref = ref
        self._ingest = ingest
        self._lease = lease
        self._data = data_path
        self._fd: int | None = fd
        self._hasher = hasher
        self._offset = offset
        self._total = total
        self._expected = expected
        self._started_at = started_at
        self._updated_at = utcnow()
        self._on_release = on_release

    @property
    def ref(self) -> str:
        """The ref this writer holds."""
        return self._ref

    @property
    def lease(self) -> Lease:
        """The lock this writer holds (for heartbeats and fencing checks)."""
        return self._lease

    def _open_fd(self) -> int:
        if self._fd is None:
            raise errdefs.FailedPrecondition(f"writer for {self._ref} is closed")
        return self._fd

    def write(self, data: bytes | bytearray | memoryview) -> int:
        fd = self._open_fd()
        self._lease.check()
        view = memoryview(data).cast("B")
        pos = 0
        try:
            while pos < len(view):
                n = os.write(fd, view[pos:])
                self._hasher.update(view[pos : pos + n])
                self._offset += n
                pos += n
        except OSError as e:
            raise from_os_error(e, f"write {self._ref} at offset {self._offset}") from e
        finally:
            self._updated_at = utcnow()
        return pos

    def digest(self) -> Digest:
        return Digest(self._hasher_alg(), self._hasher.hexdigest())

    def _hasher_alg(self) -> str:
        return CANONICAL

    def status(self) -> Status:
        return Status(
            ref=self._ref,
            offset=self._offset,
            total=self._total,
            started_at=self._started_at,
            updated_at=self._updated_at,
            expected=self._expected,
            holder=self._lease.holder,
        )

    def truncate(self, size: int) -> None:
        if size != 0:
            raise errdefs.InvalidArgument(f"truncate {self._ref}: only size 0 is supported")
        fd = self._open_fd()
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        except OSError as e:
            raise from_os_error(e, f"truncate {self._ref}") from e
        self._hasher = new_hasher(CANONICAL)
        self._offset = 0
        self._updated_at = utcnow()

    def commit(
        self, size: int = 0, expected: Digest | None = None, labels: Mapping[str, str] | None = None
    ) -> Info:
        try:
            return self._commit(size, expected, dict(labels or {}))
        finally:
            self._release()

    def _commit(self, size: int, expected: Digest | None, labels: dict[str, str]) -> Info:
        fd = self._fd
        if fd is None:
            raise errdefs.FailedPrecondition("cannot commit on closed writer")
        labelrules.validate(labels)
        self._fd = None
        try:
            if self._store.fsync:
                os.fsync(fd)
            actual_size = os.fstat(fd).st_size
        except OSError as e:
            raise from_os_error(e, f"sync {self._ref}") from e
        finally:
            os.close(fd)
        if actual_size != self._offset:
            raise errdefs.DataLoss(
                f"ingest {self._ref}: data file holds {actual_size} bytes, wrote {self._offset}"
            )
        if size > 0 and size != self._offset:
            raise errdefs.FailedPrecondition(
                f'"{self._ref}" failed size validation: {self._offset} != {size}'
            )
        digest = self.digest()
        if expected is not None and digest != expected:
            raise errdefs.FailedPrecondition(
                f"unexpected commit digest {digest}, expected {expected}"
            )
        # The lease is checked last before publishing; publishing is content-addressed, so a
        # writer whose lease expired after this check can only publish the right bytes.
        self._lease.check()
        return self._store._publish(self._ref, self._ingest, self._data, digest, labels)

    def close(self) -> None:
        fd = self._fd
        if fd is None:
            self._release()
            return
        self._fd = None
        try:
            if self._store.fsync:
                os.fsync(fd)
        except OSError:
            pass  # data kept as far as the kernel has it; resume rehashes the file anyway
        finally:
            os.close(fd)
            self._release()

    def _release(self) -> None:
        try:
            self._lease.release()
        finally:
            if self._on_release is not None:
                self._on_release()
                self._on_release = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.close()


def adopt_prefix(src: Path | None, dst_fd: int, algorithm: str = CANONICAL) -> tuple[Hasher, int]:
    """Copy ``src`` (an earlier writer's data) into ``dst_fd``, hashing exactly the bytes
    copied. Returns the hasher and the number of bytes adopted (0 if ``src`` is missing)."""
    hasher = new_hasher(algorithm)
    if src is None:
        return hasher, 0
    try:
        f = open(src, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return hasher, 0
    copied = 0
    with f:
        while True:
            chunk = f.read(_COPY_CHUNK)
            if not chunk:
                break
            view = memoryview(chunk)
            pos = 0
            while pos < len(view):
                n = os.write(dst_fd, view[pos:])
                pos += n
            hasher.update(chunk)
            copied += len(chunk)
    return hasher, copied


def ts_now_text() -> str:
    """The current UTC time in ISO form, for ``startedat``."""
    return datetime.now(UTC).isoformat()


def remove_tree(path: Path) -> None:
    """Remove an ingest directory, ignoring what is already gone."""
    shutil.rmtree(path, ignore_errors=True)


__all__ = ["LocalWriter", "adopt_prefix", "fsync_dir", "remove_tree", "write_atomic"]
