"""Opening the store's own files so that nothing planted under their names is followed.

Anyone who can write in a store directory could put a symlink, a FIFO, a device or a
directory where the store expects one of its files. :func:`open_own` never follows a
symlink in the last component (ELOOP), never waits for a FIFO's other end, and accepts
only a regular file (EINVAL otherwise, the descriptor closed); :func:`is_regular` asks
the same of a path without opening it. Its own directories are opened with
:func:`open_own_dir` (never through a symlink) and made with :func:`make_own_dir`
(anything planted at the name replaced, never followed), and removed with
:func:`remove_tree`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path

from ingestq import errdefs
from ingestq.store.oserrors import from_os_error

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


def read_own(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, one of the store's own files (:func:`open_own`: never
    through a symlink, never a FIFO or a device), read to at most ``limit``. Raises
    OSError: ELOOP / EINVAL / ENXIO for what is not a regular file, EFBIG for a file
    longer than ``limit`` (a sparse or growing one is never read whole)."""
    fd = open_own(path, os.O_RDONLY)
    try:
        parts: list[bytes] = []
        got = 0
        while got <= limit and (piece := os.read(fd, min(limit + 1 - got, 1 << 20))):
            parts.append(piece)
            got += len(piece)
    finally:
        os.close(fd)
    if got > limit:
        raise OSError(errno.EFBIG, f"longer than {limit} bytes", str(path))
    return b"".join(parts)


def read_record(path: Path, limit: int, what: str) -> bytes | None:
    """:func:`read_own` of a record the store keeps (leases, ``index.json``, a manifest
    gc reads): None if it is missing; DataLoss reading ``<what>: <reason>`` for what is
    not a regular file (planted: never read through) or is longer than ``limit``; an
    OS error of another kind (PermissionDenied, ResourceExhausted, ...) otherwise."""
    try:
        return read_own(path, limit)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in (*NOT_OWN, errno.EFBIG):
            raise errdefs.DataLoss(f"{what}: {e}") from e
        raise from_os_error(e, what) from e


#: A directory of the store's own: never through a symlink (ELOOP), a directory only.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_own_dir(path: Path) -> int:
    """Open the directory ``path`` (the caller closes the descriptor), never through a
    symlink. Raises OSError: ENOENT if missing, ELOOP or ENOTDIR if a symlink or
    something else is at its name."""
    return os.open(path, _DIR_FLAGS)


def make_own_dir(path: Path) -> bool:
    """Make the directory ``path`` (its parent must exist); True if this call made it,
    False if a directory was there. A symlink or file at its name is removed (never
    followed) and the directory made in its place. Raises OSError: FileNotFoundError if
    what was there is removed concurrently (the caller starts over)."""
    try:
        path.mkdir()
        return True
    except FileExistsError:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT, "directory removed concurrently", str(path)
            ) from None
        if stat.S_ISDIR(mode):
            return False
    os.unlink(path)
    path.mkdir()
    return True


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


def remove_tree(path: Path, *, strict: bool = False) -> None:
    """Remove a directory tree; one that is (or becomes) missing is fine, and a symlink
    or file in its place is unlinked (never followed). A tree deeper than
    ``shutil.rmtree`` can recurse is removed level by level. Other errors raise OSError
    when ``strict`` and are ignored otherwise."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            path.unlink()
            return
    except FileNotFoundError:
        return
    except OSError:
        if strict:
            raise
        return
    for _ in range(3):
        try:
            try:
                shutil.rmtree(path)
            except RecursionError:
                _remove_deep(path)
            return
        except FileNotFoundError:
            if not path.exists():
                return  # removed meanwhile, by us or by someone else
        except OSError:
            if strict:
                raise
            with contextlib.suppress(OSError, RecursionError):
                shutil.rmtree(path, ignore_errors=True)
            return
    shutil.rmtree(path, ignore_errors=not strict)


def _remove_deep(top: Path) -> None:
    """Remove the tree ``top`` without recursion (symlinks unlinked, never followed).
    Raises OSError (ENAMETOOLONG past PATH_MAX)."""
    stack = [str(top)]
    while stack:
        current = stack[-1]
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except FileNotFoundError:
            stack.pop()
            continue
        subdirs = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
        if subdirs:
            stack.extend(subdirs)
            continue
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(current)
        stack.pop()


__all__ = [
    "NOT_OWN",
    "OWN_FLAGS",
    "has_hole",
    "is_regular",
    "make_own_dir",
    "names_file",
    "open_adoptable",
    "open_own",
    "open_own_dir",
    "read_own",
    "read_record",
    "remove_tree",
]
