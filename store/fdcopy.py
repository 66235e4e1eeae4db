"""Copies between two file descriptors inside the kernel, and the small protocol of a
writer that can take them.

:func:`kernel_copy` moves bytes from a file to a file without passing them through
Python: ``copy_file_range`` (Linux; a reflink where the filesystem shares extents, e.g.
btrfs and XFS), else ``sendfile`` (Linux takes any file as its output). Where neither
works for this pair of files (EXDEV, ENOSYS, EINVAL, EOPNOTSUPP, a seccomp filter's
EPERM, another OS) it answers None and the caller copies by ``pread`` + ``write``.

A kernel copy saves work only where the filesystem shares extents or copies on its
server (:func:`copy_saves_work`). On others (ext4, tmpfs) it is one more copy through the
page cache like ``pread`` + ``write``, and the digest must then be read back from the
data file: measured on the project's 2-core machines, 512 MiB took 0.40-0.42 s that way
against 0.33-0.36 s read through a ring of buffers hashed behind the writes.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Mapping
from typing import Literal, Protocol, runtime_checkable

from ingestq.store.digest import Digest
from ingestq.store.helpers import finish_copy, longer_than
from ingestq.store.libc import linux_function
from ingestq.store.oserrors import from_os_error
from ingestq.store.protocols import Writer
from ingestq.store.values import Info

#: Bytes :func:`copy_fd` asks :meth:`FdCopier.copy_from` for at a time.
FD_PIECE = 64 << 20

#: How :func:`kernel_copy` may copy: ``auto`` tries copy_file_range then sendfile.
Method = Literal["auto", "copy_file_range", "sendfile", "none"]

# Errors that say "this pair of files (or this system) cannot do it", not "it failed".
_UNSUPPORTED = frozenset(
    {
        errno.EXDEV,
        errno.ENOSYS,
        errno.EINVAL,
        errno.EOPNOTSUPP,
        errno.ENOTSUP,
        errno.EPERM,
        errno.EBADF,
    }
)


# statfs f_type of filesystems on which copy_file_range shares extents (a reflink) or
# copies on the server instead of through this host's page cache.
_SHARING_FILESYSTEMS = frozenset(
    {
        0x9123683E,  # btrfs
        0x58465342,  # XFS (reflink is the default since xfsprogs 5.1)
        0xCA451A4E,  # bcachefs
        0x2FC12FC1,  # OpenZFS (block cloning)
        0x7461636F,  # OCFS2
        0x6969,  # NFS (server-side copy, 4.2)
        0xFE534D42,  # SMB2
        0xFF534D42,  # CIFS
        0x00C36400,  # CephFS
    }
)


class _StatFs(ctypes.Structure):
    # struct statfs starts with f_type: a C long (__fsword_t) on Linux, except s390x,
    # where it is a 32-bit unsigned int; the rest is room for the other fields.
    _fields_ = [
        ("f_type", ctypes.c_uint if os.uname().machine == "s390x" else ctypes.c_long),
        ("_rest", ctypes.c_byte * 256),
    ]


_statfs_call = linux_function("fstatfs", [ctypes.c_int, ctypes.POINTER(_StatFs)])


def filesystem_type(fd: int) -> int | None:
    """The type of the filesystem holding the file ``fd`` (``statfs``'s ``f_type``, as
    ``stat -f -c %t`` prints it in hex), or None where it cannot be told (another OS,
    an error such as EOVERFLOW)."""
    if _statfs_call is None:
        return None
    buf = _StatFs()
    if _statfs_call(fd, ctypes.pointer(buf)) != 0:
        return None
    return int(buf.f_type) & 0xFFFFFFFF


def copy_saves_work(src: int, dst: int) -> bool:
    """Whether a kernel copy from the file ``src`` into the file ``dst`` costs less than
    reading and writing: both lie on one filesystem that shares extents (btrfs, XFS,
    bcachefs, OpenZFS, OCFS2) or copies on its server (NFS, SMB, CephFS). False where
    that cannot be told (other OSes). Raises OSError when either cannot be stat'ed."""
    if os.fstat(src).st_dev != os.fstat(dst).st_dev:
        return False  # across filesystems the kernel copies through the page cache
    return filesystem_type(dst) in _SHARING_FILESYSTEMS


def _copy_file_range(src: int, dst: int, offset: int, count: int) -> int:
    return os.copy_file_range(src, dst, count, offset)


def _sendfile(src: int, dst: int, offset: int, count: int) -> int:
    return os.sendfile(dst, src, offset, count)


def kernel_copy(src: int, dst: int, offset: int, count: int, method: Method = "auto") -> int | None:
    """Copy up to ``count`` bytes of ``src`` from ``offset`` (``src``'s own position is
    left alone) to ``dst`` at its current position (which advances).

    Returns the number of bytes copied (0 at the end of ``src``; fewer than ``count``
    is fine, call again), or None when no kernel copy works for these files (then
    nothing was copied). OSError for a real failure (ENOSPC, EIO, EFBIG, ...).
    """
    steps = []
    if method in ("auto", "copy_file_range") and hasattr(os, "copy_file_range"):
        steps.append(_copy_file_range)
    if method in ("auto", "sendfile") and hasattr(os, "sendfile"):
        steps.append(_sendfile)
    for step in steps:
        try:
            return step(src, dst, offset, count)
        except OSError as e:
            if e.errno not in _UNSUPPORTED:
                raise
    return None


@runtime_checkable
class FdCopier(Protocol):
    """A writer that can append bytes straight from a file descriptor (an optional
    addition to :class:`~ingestq.store.protocols.Writer`)."""

    def copy_from(self, fd: int, offset: int, length: int) -> int:
        """Append up to ``length`` bytes of the file ``fd`` from ``offset``, as
        ``write`` would (same digest, budget, lease and error rules); returns the
        number appended, fewer only at the end of the file."""
        ...


class FdWriter(Writer, FdCopier, Protocol):
    """A :class:`~ingestq.store.protocols.Writer` that is also an :class:`FdCopier`."""


def copy_fd(
    writer: FdWriter,
    fd: int,
    size: int = 0,
    expected: Digest | None = None,
    labels: Mapping[str, str] | None = None,
) -> Info | None:
    """:func:`ingestq.store.helpers.copy` for a regular file ``fd``: the same resume,
    checks, errors and result, with the bytes copied by the kernel.

    The copy starts at the writer's stored offset (``pread`` offsets: ``fd``'s position
    is not used); an ingest longer than ``size`` restarts from 0. DataLoss when the
    file ends before ``size``; FailedPrecondition when it is longer (nothing past
    ``size`` is written). Returns the Info, or None when the content already existed.
    """
    status = writer.status()
    ref, written = status.ref, status.offset
    if size and written > size:
        writer.truncate(0)
        written = 0
    while True:
        want = FD_PIECE if not size else min(FD_PIECE, size - written)
        if want == 0:
            try:
                more = os.pread(fd, 1, written)
            except OSError as e:
                raise from_os_error(e, f"read the source of {ref}") from e
            if more:
                raise longer_than(ref, size)
            break
        n = writer.copy_from(fd, written, want)
        if not n:
            break
        written += n
    return finish_copy(writer, ref, written, size, expected, labels)


__all__ = [
    "FD_PIECE",
    "FdCopier",
    "FdWriter",
    "Method",
    "copy_fd",
    "copy_saves_work",
    "filesystem_type",
    "kernel_copy",
]
