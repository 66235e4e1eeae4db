"""Atomic file replacement: the one way ingestq writes a small file it may re-read.

Write a temporary file beside the target, optionally fsync it, rename it over the
target, and (with ``sync``) fsync the directory, so a reader sees the old content or
the new, never a mix, and a crash never leaves a half-written file under the name.
``sync_dir=False`` skips the directory fsync for a caller that syncs the directory (or
the filesystem journal) itself right after.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ingestq.store.ownfiles import open_own_dir

#: The names of temporary files: ``.<name>.<8 hex>.tmp`` (:func:`write_bytes`; a
#: ``.new`` suffix for a file that is then linked rather than renamed) and
#: ``.<32 hex>.tmp`` (a blob put where the filesystem has no unnamed files).
_TEMP_NAME = re.compile(r"\.(?:.+\.[0-9a-f]{8}|[0-9a-f]{32})\.(?:tmp|new)")


#: Seconds a temporary file must be left untouched before a sweep removes it: far
#: longer than any write takes, even a stalled one that resumes.
TEMP_MIN_AGE = 24 * 3600.0


def temp_name(path: Path, suffix: str = "tmp") -> Path:
    """A fresh temporary name beside ``path`` (``.<name>.<8 hex>.<suffix>``)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.{suffix}")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` has the shape of a temporary file ingestq writes."""
    return _TEMP_NAME.fullmatch(name) is not None


def sweep_temp_files(directory: Path, older_than: float, *, dry_run: bool = False) -> int:
    """Remove the temporary files (:func:`is_temp_name`, regular files only) in
    ``directory`` not modified since ``older_than`` (a Unix time), and at least
    :data:`TEMP_MIN_AGE` ago whatever ``older_than`` says: left by a writer killed
    before its rename. The directory is opened without following a symlink and the
    files are unlinked relative to it, so nothing outside it is touched. How many there
    were (with ``dry_run``, only counted). A missing directory has none."""
    older_than = min(older_than, time.time() - TEMP_MIN_AGE)
    try:
        fd = open_own_dir(directory)
    except OSError:
        return 0
    count = 0
    try:
        for entry in os.scandir(fd):
            if not is_temp_name(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_mtime >= older_than:
                continue
            count += 1
            if not dry_run:
                with contextlib.suppress(OSError):
                    os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    return count


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
    tmp = temp_name(path)
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


def write_json(
    path: Path,
    obj: object,
    *,
    sync: bool = True,
    sync_dir: bool | None = None,
    limit: int | None = None,
) -> None:
    """:func:`write_bytes` of ``obj`` as indented, key-sorted JSON and a newline.

    Raises OSError (EFBIG, nothing written, when the text would take more than ``limit``
    bytes), or TypeError/ValueError when ``obj`` is not JSON-serializable.
    """
    data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")
    if limit is not None and len(data) > limit:
        raise OSError(errno.EFBIG, f"more than {limit} bytes", str(path))
    write_bytes(path, data, sync=sync, sync_dir=sync_dir)


__all__ = ["fsync_dir", "write_bytes", "write_json", "write_text"]
