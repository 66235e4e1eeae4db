"""Filesystems made for a test: a fresh XFS in a sparse image file, loop-mounted."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def loop_xfs(where: Path, size: int = 320 << 20) -> Iterator[Path]:
    """A new XFS (with reflinks) of ``size`` bytes (at least 300 MiB, XFS's smallest),
    its image a sparse file in ``where``, mounted at ``where/xfs`` until the block ends.
    Needs root and a loop device."""
    image, mnt = where / "xfs.img", where / "xfs"
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
