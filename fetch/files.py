"""Local files as a source, only under allow-listed roots.

A path must be absolute and free of ``..`` components. With roots, the path is first
resolved with ``realpath`` and must lie under one of the roots (resolved the same way):
a symlink may point anywhere inside a root (relatively or absolutely), one leading out
is PermissionDenied. The rest of the resolved path is then opened *beneath the root's
directory* without following any symlink, so what is read is what was checked even if
the tree changes in between (a directory swapped for a symlink makes the open fail,
never leave the root):

* where the kernel has it, by ``openat2(root_fd, rest, RESOLVE_BENEATH |
  RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)``;
* otherwise (older kernels, seccomp filters answering ENOSYS or EPERM, other
  platforms) by walking ``rest`` one component at a time from the root's fd, each
  opened with ``O_NOFOLLOW`` relative to the previous one.

Both refuse the same paths: a symlink met at open time (the path changed since it was
resolved) is PermissionDenied.

Only regular files are sources. The file is opened with ``O_NONBLOCK`` and checked with
``fstat`` before anything reads it, so a FIFO, socket, device or directory is
InvalidArgument at once instead of blocking the open; reads are then blocking again.

Roots come from :attr:`FetchOptions.file_roots <ingestq.fetch.options.FetchOptions>`
(``INGESTQ_FILE_ROOTS`` through ``Settings.fetch_options()``). ``roots=None`` means "no
restriction": what the embedded default uses when the variable is unset (the caller
reads its own files with its own rights, symlinks followed); workers with the variable
unset get ``()``, which refuses every file.

The stream of an opened :class:`FileSource` is a :class:`LocalFileStream`: it names its
file descriptor, so an ingest may have the kernel copy the file (``copy_file_range``,
see :mod:`ingestq.store.fdcopy`) instead of reading it (``zero_copy=False`` hides the
descriptor: the bytes are then read as from any stream).

A :class:`FileSource` is :class:`~ingestq.fetch.source.Validated` by the file's
identity (device, inode, size, modification time): a resume of a file that changed
starts at 0.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
import sys
import threading
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Protocol, runtime_checkable

from ingestq import errdefs
from ingestq.fetch.source import Opened
from ingestq.store.oserrors import from_os_error

# O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOCTTY: a terminal never
# becomes the controlling one.
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
# O_PATH where the platform has it: search permission suffices for a directory.
_DIR_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC

_SYS_OPENAT2 = {"x86_64": 437, "amd64": 437, "aarch64": 437, "arm64": 437}
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2_lock = threading.Lock()
_openat2_usable: bool | None = None
_libc: ctypes.CDLL | None = None


def _raw_openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """``openat2(2)``: the new fd, or OSError (ENOSYS without the syscall)."""
    nr = _SYS_OPENAT2.get(platform.machine().lower()) if sys.platform == "linux" else None
    if nr is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    libc = _libc
    how = _OpenHow(flags, 0, resolve)
    fd = int(
        libc.syscall(
            ctypes.c_long(nr),
            ctypes.c_long(dirfd),
            ctypes.c_char_p(os.fsencode(path)),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def openat2_available() -> bool:
    """Whether this process can call ``openat2`` with the resolve flags used here
    (probed once: ENOSYS, EPERM from a seccomp filter or EINVAL mean no)."""
    global _openat2_usable
    with _openat2_lock:
        if _openat2_usable is None:
            top = os.open("/", _DIR_FLAGS)
            try:
                os.close(_raw_openat2(top, ".", _DIR_FLAGS, _RESOLVE))
                _openat2_usable = True
            except OSError:
                _openat2_usable = False
            finally:
                os.close(top)
        return _openat2_usable


def _walk_beneath(root_fd: int, rest: str) -> int:
    """Open ``rest`` below ``root_fd`` component by component, never following a
    symlink: OSError ELOOP on one (directory or file), ENOTDIR, ENOENT, ..."""
    parts = rest.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise OSError(errno.EXDEV, "path leaves the root", rest)
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                # O_NOFOLLOW|O_DIRECTORY on a symlink says ENOTDIR; openat2 says ELOOP.
                if e.errno == errno.ENOTDIR:
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), part) from e
                raise
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], _READ_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)


def open_beneath(root: Path, rest: str, *, use_openat2: bool = True) -> int:
    """A read fd (non-blocking, close-on-exec) of ``rest``, a relative path without
    symlinks, opened beneath the directory ``root`` so it cannot leave it.

    ``openat2`` when :func:`openat2_available` and ``use_openat2``; else the
    component walk. OSError as the system reports it: ELOOP when a component is a
    symlink, EXDEV when the path would leave ``root``, ENOENT, ENOTDIR, EACCES, ...
    """
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        if use_openat2 and openat2_available():
            return _raw_openat2(root_fd, rest, _READ_FLAGS | os.O_NOFOLLOW, _RESOLVE)
        return _walk_beneath(root_fd, rest)
    finally:
        os.close(root_fd)


class _FileStream:
    def __init__(self, fd: int, name: str) -> None:
        self._f = os.fdopen(fd, "rb", buffering=0)
        self._name = name

    def read(self, n: int = -1, /) -> bytes:
        try:
            return self._f.read(n) or b""
        except OSError as e:
            raise from_os_error(e, f"read {self._name}") from e

    def close(self) -> None:
        self._f.close()


class _FdFileStream(_FileStream):
    def regular_file_fd(self) -> int:
        return self._f.fileno()


@runtime_checkable
class LocalFileStream(Protocol):
    """A source stream that is a regular local file whose descriptor may be read
    directly (``pread``, ``copy_file_range``) from any offset."""

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes from the stream's position (b"" at the end)."""
        ...

    def regular_file_fd(self) -> int:
        """The open file descriptor of the regular file (owned by the stream: valid
        until ``close``). Not ``fileno``: every io object has that one, sockets too."""
        ...

    def close(self) -> None:
        """Close the file."""
        ...


def _locate(path: str | os.PathLike[str], roots: Sequence[Path] | None) -> tuple[Path, Path | None]:
    """(resolved path, the resolved root it lies under; None when ``roots`` is None)."""
    text = os.fspath(path)
    if not os.path.isabs(text):
        raise errdefs.InvalidArgument(f"file source {text!r} must be an absolute path")
    if ".." in PurePosixPath(text).parts:
        raise errdefs.InvalidArgument(f"file source {text!r} must not contain '..'")
    try:
        resolved = Path(os.path.realpath(text))
    except OSError as e:  # a component changed or vanished while it was resolved
        if e.errno == errno.ENOENT:
            raise errdefs.NotFound(f"resolve {text}: {e.strerror}") from e
        raise errdefs.FailedPrecondition(
            f"file source {text} changed while it was resolved: {e.strerror}"
        ) from e
    if roots is None:
        return resolved, None
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if resolved == real_root or resolved.is_relative_to(real_root):
            return resolved, real_root
    raise errdefs.PermissionDenied(
        f"file source {text} is outside the allowed file roots (INGESTQ_FILE_ROOTS)"
    )


def check_path(path: str | os.PathLike[str], roots: Sequence[Path] | None) -> Path:
    """The resolved path of ``path`` if a file source may read it.

    A check by name only: :class:`FileSource` also opens the file beneath its root.
    Raises InvalidArgument for a relative path or one with ``..``; PermissionDenied
    when the resolved path is outside every root (or no roots are allowed).
    """
    return _locate(path, roots)[0]


class FileSource:
    """Bytes of a local file (the :class:`~ingestq.fetch.source.Source`,
    :class:`~ingestq.fetch.source.Validated` and :class:`~ingestq.fetch.source.HostLocal`
    protocols).

    ``use_openat2=False`` forces the portable component walk even where the kernel has
    ``openat2`` (both refuse the same paths; see the module docstring).
    ``zero_copy=False`` opens plain streams (not :class:`LocalFileStream`), so an
    ingest reads the file instead of having the kernel copy it."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        roots: Sequence[Path] | None,
        *,
        use_openat2: bool = True,
        zero_copy: bool = True,
    ) -> None:
        self._path = os.fspath(path)
        self._zero_copy = zero_copy
        self._roots = None if roots is None else tuple(roots)
        self._use_openat2 = use_openat2
        self.if_range: str | None = None
        self._validator: str | None = None

    @property
    def name(self) -> str:
        """The path as given."""
        return self._path

    @property
    def validator(self) -> str | None:
        """``file:<dev>:<ino>:<size>:<mtime_ns>`` of the file last opened."""
        return self._validator

    @property
    def host_local(self) -> bool:
        """True: a file of this host (:class:`~ingestq.fetch.source.HostLocal`)."""
        return True

    def _open_fd(self) -> int:
        resolved, root = _locate(self._path, self._roots)
        try:
            if root is None or resolved == root:
                # No restriction (or a root that is itself the file): the name as is.
                return os.open(self._path if root is None else resolved, _READ_FLAGS)
            return open_beneath(
                root, str(resolved.relative_to(root)), use_openat2=self._use_openat2
            )
        except OSError as e:
            if root is not None and e.errno in (errno.ELOOP, errno.EXDEV):
                raise errdefs.PermissionDenied(
                    f"file source {self._path}: a symlink where the resolved path had "
                    "none (the path changed while it was opened, or a symlink loop); "
                    "refused, it could lead outside the allowed file roots "
                    "(INGESTQ_FILE_ROOTS)"
                ) from e
            if e.errno == errno.ENXIO:  # a unix socket (or a device with no driver)
                raise errdefs.InvalidArgument(
                    f"file source {self._path} is not a regular file"
                ) from e
            if e.errno == errno.ENOTDIR:
                raise errdefs.NotFound(f"open {self._path}: {e.strerror}") from e
            raise from_os_error(e, f"open {self._path}") from e

    def open(self, offset: int = 0) -> Opened:
        """Open at ``offset`` (at 0 when ``if_range`` no longer matches the file).

        Never blocks on the file's type. NotFound (missing), PermissionDenied (outside
        the roots, no access, or the path changed to a symlink while being opened),
        InvalidArgument (not a regular file: FIFO, socket, device, directory; relative
        path; ``..``), FailedPrecondition (the path changed while it was resolved)."""
        fd = self._open_fd()
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise errdefs.InvalidArgument(f"file source {self._path} is not a regular file")
            os.set_blocking(fd, True)
            self._validator = f"file:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
            if offset and self.if_range is not None and self.if_range != self._validator:
                offset = 0
            if offset > st.st_size:
                offset = 0
            os.lseek(fd, offset, os.SEEK_SET)
        except OSError as e:
            os.close(fd)
            raise from_os_error(e, f"open {self._path}") from e
        except BaseException:
            os.close(fd)
            raise
        stream = _FdFileStream if self._zero_copy else _FileStream
        return Opened(stream(fd, self._path), offset, st.st_size)
