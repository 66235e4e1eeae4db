"""Linux libc functions that Python's :mod:`os` lacks (``linkat`` following
``/proc/self/fd``, ``sync_file_range``, ``fstatfs``), looked up once through ctypes."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any


def linux_function(name: str, argtypes: Sequence[Any]) -> Callable[..., int] | None:
    """The libc function ``name`` taking ``argtypes`` and returning a C int (0 for
    success), or None off Linux or where this libc has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def check(result: int, *filename: str) -> None:
    """Raise the OSError of the C ``errno`` when a libc call returned nonzero."""
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), *filename)


__all__ = ["check", "linux_function"]
