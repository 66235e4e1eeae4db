"""Atomic file replacement: the one way ingestq writes a small file it may re-read.

Write a temporary file beside the target, optionally fsync it, rename it over the
target, and (with ``sync``) fsync the directory, so a reader sees the old content or
the new, never a mix, and a crash never leaves a half-written file under the name.
``sync_dir=False`` skips the directory fsync for a caller that syncs the directory (or
the filesystem journal) itself right after.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync the directory ``path`` so a rename inside it is durable. Raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(
    path: Path,
    data: bytes,
    *,
    sync: bool = True,
    sync_dir: bool | None = None,
    finish: Callable[[int], None] | None = None,
) -> None:
    """Replace ``path`` with ``data`` atomically; with ``sync``, durably (the file
    fsynced, and the directory too unless ``sync_dir`` is False). ``finish`` is called
    with the temporary file's descriptor after the data is written and before the
    fsync (to set its mode or attributes). Raises OSError; the temporary file is removed
    on failure."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if finish is not None:
                finish(f.fileno())
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync and sync_dir is not False:
        fsync_dir(path.parent)


def write_text(path: Path, text: str, *, sync: bool = True, sync_dir: bool | None = None) -> None:
    """:func:`write_bytes` of ``text`` in UTF-8 (lone surrogates kept). Raises OSError."""
    write_bytes(path, text.encode("utf-8", errors="surrogatepass"), sync=sync, sync_dir=sync_dir)


def write_json(path: Path, obj: object, *, sync: bool = True, sync_dir: bool | None = None) -> None:
    """:func:`write_bytes` of ``obj`` as indented, key-sorted JSON and a newline.

    Raises OSError, or TypeError/ValueError when ``obj`` is not JSON-serializable.
    """
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    write_bytes(path, text.encode("utf-8"), sync=sync, sync_dir=sync_dir)


__all__ = ["fsync_dir", "write_bytes", "write_json", "write_text"]
