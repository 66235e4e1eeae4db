"""``quarantine/`` under a store root: where blobs found damaged on disk are moved aside
for inspection, until gc removes them.

Whoever can write in the root could put a symlink at ``quarantine`` or plant anything
inside it. The directory is only ever used through a descriptor opened without
following a symlink (a symlink or file at its name is removed when a blob is moved in,
and is no quarantine for a listing), and its entries are removed relative to that
descriptor, never followed: nothing outside the store is moved into, counted or
removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from ingestq.store.ownfiles import make_own_dir, open_own_dir


@contextlib.contextmanager
def opened(path: Path, *, create: bool = False) -> Iterator[int | None]:
    """The quarantine directory ``path`` open as a descriptor (closed on exit); None when
    there is none or something else is at its name. With ``create`` it is made first,
    and a symlink or file at its name is removed and the directory made in its place.
    Raises OSError (with ``create``: when it cannot be made)."""
    if create:
        make_own_dir(path)
    try:
        fd = open_own_dir(path)
    except OSError as e:
        if create or e.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            raise
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def move_in(blob: Path, quarantine: Path, name: str) -> None:
    """Rename the file ``blob`` into the quarantine directory ``quarantine`` as ``name``
    (made if missing). FileNotFoundError if ``blob`` is gone; other OSError."""
    with opened(quarantine, create=True) as fd:
        os.rename(blob, name, dst_dir_fd=fd)


def entries(fd: int) -> list[tuple[str, os.stat_result]]:
    """The names in the quarantine open as ``fd`` with their ``lstat`` (entries that
    vanish meanwhile are left out)."""
    out = []
    for entry in os.scandir(fd):
        with contextlib.suppress(OSError):
            out.append((entry.name, entry.stat(follow_symlinks=False)))
    return out


def held_bytes(st: os.stat_result) -> int:
    """What an entry holds on disk for the budget and the reports: a regular file's
    size; 0 for anything else planted there."""
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def held(path: Path) -> list[int]:
    """The bytes each entry of the quarantine directory ``path`` holds
    (:func:`held_bytes`); none when there is no quarantine or it cannot be read."""
    with contextlib.suppress(OSError), opened(path) as fd:
        return [] if fd is None else [held_bytes(st) for _, st in entries(fd)]
    return []


def remove(fd: int, name: str, st: os.stat_result) -> None:
    """Remove the entry ``name`` (``st`` its ``lstat``) of the quarantine open as ``fd``,
    relative to the descriptor and never following a symlink (``shutil.rmtree`` with
    ``dir_fd``). Raises OSError: ENAMETOOLONG for a planted tree deeper than
    ``shutil.rmtree`` can recurse (kept: a walk by path could be led outside by a
    symlink swapped in midway)."""
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=fd)
        return
    try:
        shutil.rmtree(name, dir_fd=fd)
    except RecursionError:
        raise OSError(errno.ENAMETOOLONG, "directory tree too deep to remove", name) from None


__all__ = ["entries", "held", "held_bytes", "move_in", "opened", "remove"]
