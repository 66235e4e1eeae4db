"""Local files as a source, only under allow-listed roots.

A path must be absolute and free of ``..`` components; after resolving every symlink
it must still lie under one of the roots (resolved the same way), so a symlink cannot
escape. The resolved file is opened with ``O_NOFOLLOW`` and must be a regular file.

Roots come from :attr:`FetchOptions.file_roots <ingestq.fetch.options.FetchOptions>`
(``INGESTQ_FILE_ROOTS`` through ``Settings.fetch_options()``). ``roots=None`` means "no
restriction": what the embedded default uses when the variable is unset (the caller
reads its own files with its own rights); workers with the variable unset get ``()``,
which refuses every file.

A :class:`FileSource` is :class:`~ingestq.fetch.source.Validated` by the file's
identity (device, inode, size, modification time): a resume of a file that changed
starts at 0.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ingestq import errdefs
from ingestq.fetch.source import Opened
from ingestq.store.oserrors import from_os_error


class _FileStream:
    def __init__(self, fd: int) -> None:
        self._f = os.fdopen(fd, "rb", buffering=0)

    def read(self, n: int = -1, /) -> bytes:
        try:
            return self._f.read(n) or b""
        except OSError as e:
            raise from_os_error(e, f"read {self._f.name}") from e

    def close(self) -> None:
        self._f.close()


def check_path(path: str | os.PathLike[str], roots: Sequence[Path] | None) -> Path:
    """The resolved path of ``path`` if a file source may read it.

    Raises InvalidArgument for a relative path or one with ``..``; PermissionDenied
    when the resolved path is outside every root (or no roots are allowed).
    """
    text = os.fspath(path)
    if not os.path.isabs(text):
        raise errdefs.InvalidArgument(f"file source {text!r} must be an absolute path")
    if ".." in PurePosixPath(text).parts:
        raise errdefs.InvalidArgument(f"file source {text!r} must not contain '..'")
    resolved = Path(os.path.realpath(text))
    if roots is None:
        return resolved
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if resolved == real_root or resolved.is_relative_to(real_root):
            return resolved
    raise errdefs.PermissionDenied(
        f"file source {text} is outside the allowed file roots (INGESTQ_FILE_ROOTS)"
    )


class FileSource:
    """Bytes of a local file (the :class:`~ingestq.fetch.source.Source` and
    :class:`~ingestq.fetch.source.Validated` protocols)."""

    def __init__(self, path: str | os.PathLike[str], roots: Sequence[Path] | None) -> None:
        self._path = os.fspath(path)
        self._roots = None if roots is None else tuple(roots)
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

    def open(self, offset: int = 0) -> Opened:
        """Open at ``offset`` (at 0 when ``if_range`` no longer matches the file).

        NotFound, PermissionDenied (outside the roots or no access), InvalidArgument
        (not a regular file, relative path, ``..``)."""
        resolved = check_path(self._path, self._roots)
        try:
            fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise from_os_error(e, f"open {self._path}") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise errdefs.InvalidArgument(f"file source {self._path} is not a regular file")
            self._validator = f"file:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
            if offset and self.if_range is not None and self.if_range != self._validator:
                offset = 0
            if offset > st.st_size:
                offset = 0
            os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return Opened(_FileStream(fd), offset, st.st_size)
