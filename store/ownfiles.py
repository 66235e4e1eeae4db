"""Opening the store's own files so that nothing planted under their names is followed.

Anyone who can write in a store directory could put a symlink, a FIFO, a device or a
directory where the store expects one of its files. :func:`open_own` never follows a
symlink in the last component (ELOOP), never waits for a FIFO's other end, and accepts
only a regular file (EINVAL otherwise, the descriptor closed); :func:`is_regular` asks
the same of a path without opening it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

#: Never through a symlink, never waiting for a FIFO's other end, never a controlling tty.
OWN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: What opening an own file says when what is there is not a regular file.
NOT_OWN = (errno.ELOOP, errno.EINVAL, errno.ENXIO)


def open_own(path: Path, flags: int, mode: int = 0o644) -> int:
    """Open ``path``, one of the store's own files, with ``flags`` (``os.O_RDONLY``,
    ``os.O_RDWR``, optionally ``os.O_CREAT``): never through a symlink (ELOOP), and only
    a regular file (EINVAL for a FIFO, device or directory, checked without waiting on
    a FIFO). The descriptor is blocking. Raises OSError."""
    fd = os.open(path, flags | OWN_FLAGS, mode)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_regular(path: Path) -> bool:
    """Whether ``path`` itself (not a symlink's target) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def names_file(path: Path, fd: int) -> bool:
    """Whether ``path`` itself (not a symlink's target) is the file open as ``fd``."""
    try:
        named, held = os.lstat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def has_hole(fd: int) -> bool:
    """Whether the regular file open as ``fd`` has a hole (``SEEK_HOLE`` before its
    end). The store writes its data files front to back, so one with a hole was planted
    (a sparse file of a TiB would otherwise be hashed whole); False where the
    filesystem cannot tell (no ``SEEK_HOLE``: the whole file counts as data)."""
    whence = getattr(os, "SEEK_HOLE", None)
    if whence is None:
        return False
    try:
        return os.lseek(fd, 0, whence) < os.fstat(fd).st_size
    except OSError:
        return False


def open_adoptable(path: Path, flags: int) -> int | None:
    """:func:`open_own` for an earlier writer's data file, or None when what lies at
    ``path`` was planted: not a regular file, or one with a hole (:func:`has_hole`;
    closed again, never read). Raises other OSError (FileNotFoundError included)."""
    try:
        fd = open_own(path, flags)
    except OSError as e:
        if e.errno in NOT_OWN:
            return None
        raise
    if has_hole(fd):
        os.close(fd)
        return None
    return fd


__all__ = [
    "NOT_OWN",
    "OWN_FLAGS",
    "has_hole",
    "is_regular",
    "names_file",
    "open_adoptable",
    "open_own",
]
