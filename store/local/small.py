"""The small-blob path's setting and its temporary file.

Content whose bytes are all in memory and whose size is at most :func:`small_blob_max`
(1 MiB unless ``INGESTQ_SMALL_BLOB`` says otherwise; ``0`` turns the path off) is
committed by :meth:`LocalStore.put` without an ingest directory: hashed in memory,
written to one temporary file in the blob's own directory, fsynced, linked under its
digest and the directory fsynced. The temporary file is unnamed (``O_TMPFILE``, Linux)
where the filesystem offers it, so a crash at any point leaves nothing behind; elsewhere
it is a ``.<random>.tmp`` file beside the blobs that is removed on every outcome except
a crash between its creation and the link.
"""

from __future__ import annotations

import ctypes
import errno
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from ingestq.store.budget import parse_size
from ingestq.store.libc import check, linux_function

#: The environment variable that sets the small-blob threshold (``512K``, ``1M``, ``0``).
SMALL_BLOB_ENV = "INGESTQ_SMALL_BLOB"
#: The default threshold: at most this many bytes take the small-blob path.
DEFAULT_SMALL_BLOB_MAX = 1 << 20

_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_AT_FDCWD = -100
_AT_SYMLINK_FOLLOW = 0x400
# Where the kernel or filesystem has no O_TMPFILE, open() answers one of these.
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOTSUP}


def _libc_linkat() -> Callable[[bytes, bytes], None] | None:
    """``linkat(AT_FDCWD, src, AT_FDCWD, dst, AT_SYMLINK_FOLLOW)`` from libc (Linux), or
    None. Python's ``os.link`` does not follow ``/proc/self/fd/N``, which an unnamed
    file needs to get a name."""
    c = ctypes
    fn = linux_function("linkat", [c.c_int, c.c_char_p, c.c_int, c.c_char_p, c.c_int])
    if fn is None:
        return None

    def linkat(src: bytes, dst: bytes) -> None:
        result = fn(_AT_FDCWD, src, _AT_FDCWD, dst, _AT_SYMLINK_FOLLOW)
        check(result, dst.decode(errors="surrogateescape"))

    return linkat


_linkat = _libc_linkat()


def small_blob_max(env: Mapping[str, str] = os.environ) -> int:
    """The small-blob threshold in bytes from ``INGESTQ_SMALL_BLOB`` (absent or empty:
    :data:`DEFAULT_SMALL_BLOB_MAX`; ``0`` disables the path). InvalidArgument for a
    malformed size."""
    text = env.get(SMALL_BLOB_ENV, "").strip()
    return parse_size(text) if text else DEFAULT_SMALL_BLOB_MAX


class TempFile:
    """Opens the one temporary file of a small blob and links it under its name.

    ``unnamed`` says whether ``O_TMPFILE`` is tried (it is switched off for good the
    first time the filesystem refuses it, or when ``/proc/self/fd`` is missing).
    """

    def __init__(self, *, unnamed: bool = True) -> None:
        self.unnamed = (
            unnamed and bool(_O_TMPFILE) and _linkat is not None and os.path.isdir("/proc/self/fd")
        )

    def open(self, directory: Path) -> tuple[int, Path | None]:
        """A new read-only-mode file open for writing in ``directory``: its descriptor
        and its path (None when it is unnamed). Raises OSError (FileNotFoundError when
        the directory is missing)."""
        if self.unnamed:
            try:
                fd = os.open(directory, _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o444)
                return fd, None
            except OSError as e:
                if e.errno not in _NO_TMPFILE:
                    raise
                self.unnamed = False
        tmp = directory / f".{uuid.uuid4().hex}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        return os.open(tmp, flags, 0o444), tmp

    @staticmethod
    def link(fd: int, tmp: Path | None, target: Path) -> None:
        """Give the file its name ``target``; never replaces an existing file
        (FileExistsError). Raises OSError."""
        if tmp is None:
            assert _linkat is not None  # unnamed files are only made when it exists
            _linkat(f"/proc/self/fd/{fd}".encode(), os.fsencode(target))
        else:
            os.link(tmp, target)


def link_descriptor(fd: int, target: Path) -> bool:
    """Give the file open as ``fd`` (itself, whatever its names now are) the name
    ``target`` through ``/proc/self/fd``; False where that is not offered (the caller
    links by name). Never replaces an existing file (FileExistsError); ENOENT when the
    file has no name left. Raises OSError."""
    if _linkat is None or not os.path.isdir("/proc/self/fd"):
        return False
    _linkat(f"/proc/self/fd/{fd}".encode(), os.fsencode(target))
    return True


__all__ = [
    "DEFAULT_SMALL_BLOB_MAX",
    "SMALL_BLOB_ENV",
    "TempFile",
    "link_descriptor",
    "small_blob_max",
]
