"""Committed blobs: ``blobs/<alg>/<hex>`` (read-only) and their metadata
(``meta/<alg>/<hex>.json``: created_at, updated_at, labels)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import errdefs
from store.digest import Digest
from store.values import Info


class FileReaderAt:
    """A :class:`store.protocols.ReaderAt` over one blob file (``pread``)."""

    def __init__(self, path: Path, digest: Digest) -> None:
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise errdefs.NotFound(f"content {digest}") from None
        self._size = os.fstat(self._fd).st_size
        self._digest = digest

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        if self._fd is None:
            raise errdefs.FailedPrecondition(f"reader for {self._digest} is closed")
        if offset < 0 or offset > self._size:
            raise errdefs.OutOfRange(f"read past object length {self._size} bytes")
        return os.pread(self._fd, max(min(length, self._size - offset), 0), offset)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.close()


def meta_to_json(created_at: datetime, updated_at: datetime, labels: dict[str, str]) -> str:
    """The metadata file's JSON text."""
    return json.dumps(
        {
            "created_at": created_at.isoformat(),
            "updated_at": updated_at.isoformat(),
            "labels": labels,
        },
        sort_keys=True,
    )


def read_info(blob: Path, meta: Path, digest: Digest) -> Info:
    """Build a blob's Info from its file and metadata. NotFound if the blob is absent."""
    try:
        st = blob.stat()
    except FileNotFoundError:
        raise errdefs.NotFound(f"content {digest}") from None
    created = updated = datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)
    labels: dict[str, str] = {}
    try:
        d = json.loads(meta.read_text())
        created = datetime.fromisoformat(d["created_at"])
        updated = datetime.fromisoformat(d["updated_at"])
        labels = {str(k): str(v) for k, v in dict(d.get("labels") or {}).items()}
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a blob without readable metadata still exists; it has no labels
    return Info(digest=digest, size=st.st_size, created_at=created, updated_at=updated,
                labels=labels)
