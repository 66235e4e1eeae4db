"""Committed blobs, ``blobs/<alg>/<hex>`` (read-only), and their metadata,
``meta/<alg>/<hex>.json`` (created_at, updated_at, labels)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from ingestq import errdefs
from ingestq.store.digest import Digest, Hasher, new_hasher
from ingestq.store.oserrors import from_os_error
from ingestq.store.values import Info

HASH_CHUNK = 1 << 20


class FileReaderAt:
    """A :class:`store.protocols.ReaderAt` over one blob file (``pread`` on an open
    descriptor, so a blob deleted meanwhile stays readable to this reader)."""

    def __init__(self, path: Path, digest: Digest) -> None:
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise errdefs.NotFound(f"content {digest}") from None
        except OSError as e:
            raise from_os_error(e, f"open content {digest}") from e
        self._size = os.fstat(self._fd).st_size
        self._digest = digest

    @property
    def size(self) -> int:
        """The blob's size in bytes."""
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer only at the end; empty at the
        end). OutOfRange past the end or below 0, InvalidArgument for a negative length,
        FailedPrecondition once closed."""
        if self._fd is None:
            raise errdefs.FailedPrecondition(f"reader for {self._digest} is closed")
        if offset < 0 or offset > self._size:
            raise errdefs.OutOfRange(f"read past object length {self._size} bytes")
        if length < 0:
            raise errdefs.InvalidArgument(f"negative read length {length}")
        want = min(length, self._size - offset)
        try:
            return os.pread(self._fd, want, offset)
        except OSError as e:
            raise from_os_error(e, f"read content {self._digest}") from e

    def close(self) -> None:
        """Release the descriptor. Closing twice is fine."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.close()


def hash_fd(fd: int, algorithm: str, *, limit: int | None = None) -> tuple[Hasher, int]:
    """Hash the file behind ``fd`` from offset 0 (up to ``limit`` bytes) with ``pread``.

    Returns the hasher and the number of bytes hashed. Raises OSError.
    """
    hasher = new_hasher(algorithm)
    offset = 0
    while limit is None or offset < limit:
        want = HASH_CHUNK if limit is None else min(HASH_CHUNK, limit - offset)
        chunk = os.pread(fd, want, offset)
        if not chunk:
            break
        hasher.update(chunk)
        offset += len(chunk)
    return hasher, offset


def hash_path(path: Path, algorithm: str) -> tuple[Digest, int]:
    """The digest and size of the file at ``path``. Raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        hasher, size = hash_fd(fd, algorithm)
    finally:
        os.close(fd)
    return Digest(algorithm, hasher.hexdigest()), size


def meta_to_json(created_at: datetime, updated_at: datetime, labels: Mapping[str, str]) -> str:
    """The metadata file's JSON text."""
    return json.dumps(
        {
            "created_at": created_at.isoformat(),
            "updated_at": updated_at.isoformat(),
            "labels": dict(labels),
        },
        sort_keys=True,
    )


def read_meta(meta: Path) -> tuple[datetime, datetime, dict[str, str]] | None:
    """(created_at, updated_at, labels) from a metadata file; None if it is missing or
    unreadable (a blob without readable metadata still exists; it has no labels)."""
    try:
        d = json.loads(meta.read_text(encoding="utf-8"))
        created = datetime.fromisoformat(d["created_at"])
        updated = datetime.fromisoformat(d["updated_at"])
        labels = {str(k): str(v) for k, v in dict(d.get("labels") or {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return created, updated, labels


def read_info(blob: Path, meta: Path, digest: Digest) -> Info:
    """A blob's Info from its file and metadata. NotFound if the blob is absent."""
    try:
        st = blob.stat()
    except FileNotFoundError:
        raise errdefs.NotFound(f"content {digest}") from None
    except OSError as e:
        raise from_os_error(e, f"stat content {digest}") from e
    found = read_meta(meta)
    if found is None:
        created = updated = datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)
        labels: dict[str, str] = {}
    else:
        created, updated, labels = found
    return Info(
        digest=digest, size=st.st_size, created_at=created, updated_at=updated, labels=labels
    )
