"""The store's disk budget: a cap on the bytes its blobs, ingests and quarantined
files hold (``max_bytes``) and a reserve kept free on its filesystem (``min_free``).

:class:`Budget` is the setting (sizes parse with :func:`parse_size`: ``10G``, ``512M``,
``1.5T``); :class:`BudgetMeter` applies it to one store root. The meter keeps a running
figure of the bytes in use: measured by a walk of ``blobs/``, ``ingest/`` and
``quarantine/`` the first time it is needed, then moved by what this process writes and
removes. Other processes sharing the root change the disk behind its back, so the
figure is measured again when it comes within a margin of the cap (at most every
:data:`NEAR_REFRESH` seconds), every :data:`FAR_REFRESH` seconds otherwise, and always
before refusing. The free space is asked of the filesystem (``statvfs``) at every
check, which is one system call.

Before refusing, the meter calls its ``on_pressure`` hook once (a garbage collection,
when ``INGESTQ_GC_ON_PRESSURE`` is set and a collector is wired in) and measures again.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ingestq import errdefs
from ingestq.store import quarantine
from ingestq.store.digest import ALGORITHMS
from ingestq.store.layout import RootLayout
from ingestq.store.oserrors import from_os_error

#: Binary units of :func:`parse_size` (``K`` = 1024 bytes).
UNITS: dict[str, int] = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
UNITS["P"] = 1 << 50
#: Within a margin of the cap, the figure is measured again at most this often (s).
NEAR_REFRESH = 1.0
#: Far from the cap, the figure is measured again at most this often (s).
FAR_REFRESH = 30.0

_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([KMGTP]?)(?:I?B)?")


def parse_size(text: str) -> int:
    """Bytes from ``4096``, ``512K``, ``10G``, ``1.5T`` (binary units; ``MiB``, ``MB``
    and ``M`` are the same). InvalidArgument for anything else or a negative size."""
    m = _SIZE.fullmatch(text.strip().upper())
    if m is None:
        raise errdefs.InvalidArgument(f"size {text!r}: expected a number with K, M, G, T or P")
    value = float(m.group(1)) * UNITS[m.group(2)]
    if not math.isfinite(value) or value > 2**63 - 1:
        raise errdefs.InvalidArgument(f"size {text!r} is too large")
    return int(value)


def human(size: int) -> str:
    """``1.5 GiB`` for messages."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Budget:
    """The limits of a store: at most ``max_bytes`` in blobs, ingests and quarantined
    files, at least ``min_free`` bytes left free on the filesystem (None: no limit)."""

    max_bytes: int | None = None
    min_free: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_bytes", "min_free"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 0):
                raise errdefs.InvalidArgument(f"{name} must be >= 0, got {value!r}")

    @property
    def limited(self) -> bool:
        """Whether any limit is set."""
        return self.max_bytes is not None or self.min_free is not None

    @classmethod
    def parse(cls, max_bytes: str | None = None, min_free: str | None = None) -> Budget:
        """A budget from size texts (None or empty: no limit); InvalidArgument for a
        malformed size."""
        return cls(
            parse_size(max_bytes) if max_bytes else None,
            parse_size(min_free) if min_free else None,
        )


def measure(layout: RootLayout) -> int:
    """The bytes held by the committed blobs, the ingests' data files and the damaged
    blobs moved to ``quarantine/`` under ``layout`` (file sizes; entries vanishing
    during the walk are skipped)."""
    total = sum(quarantine.held(layout.quarantine))
    dirs = [layout.blob_dir(alg) for alg in sorted(ALGORITHMS)]
    with contextlib.suppress(FileNotFoundError):
        dirs += [Path(e.path) for e in os.scandir(layout.ingest) if e.is_dir(follow_symlinks=False)]
    for directory in dirs:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if directory.parent == layout.ingest and not entry.name.startswith(
                ("data.", "sealed.")
            ):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            total += st.st_size
    return total


class BudgetMeter:
    """Applies a :class:`Budget` to the store at ``layout`` (see the module docstring).

    ``on_pressure`` is called once before a refusal (e.g. a garbage collection), then
    the use is measured again. Thread-safe.
    """

    def __init__(
        self,
        layout: RootLayout,
        budget: Budget = Budget(),
        *,
        on_pressure: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.layout = layout
        self.budget = budget
        self.on_pressure = on_pressure
        self._clock = clock
        self._mutex = threading.Lock()
        self._used: int | None = None
        self._measured_at = 0.0

    # the running figure ----------------------------------------------------------------
    def used(self, *, fresh: bool = False) -> int:
        """The bytes in use: the running figure, measured first when ``fresh`` or when
        there is none yet."""
        with self._mutex:
            if fresh or self._used is None:
                self._measure_locked()
            assert self._used is not None
            return self._used

    def _measure_locked(self) -> None:
        self._used = measure(self.layout)
        self._measured_at = self._clock()

    def charge(self, nbytes: int) -> None:
        """Count ``nbytes`` more in use (written by this process)."""
        if nbytes and self.budget.max_bytes is not None:
            with self._mutex:
                if self._used is not None:
                    self._used += nbytes

    def credit(self, nbytes: int) -> None:
        """Count ``nbytes`` fewer in use (removed by this process)."""
        if nbytes and self.budget.max_bytes is not None:
            with self._mutex:
                if self._used is not None:
                    self._used = max(self._used - nbytes, 0)

    def _current(self, need: int, near_age: float) -> int:
        """The figure, measured again when older than ``near_age`` within a margin of
        the cap, or than :data:`FAR_REFRESH` otherwise."""
        cap = self.budget.max_bytes
        assert cap is not None
        with self._mutex:
            if self._used is None:
                self._measure_locked()
            assert self._used is not None
            age = self._clock() - self._measured_at
            margin = max(cap // 8, 1 << 20)
            near = self._used + need + margin > cap
            if age >= (near_age if near else FAR_REFRESH):
                self._measure_locked()
            return self._used

    # checks ------------------------------------------------------------------------------
    def _room(self, need: int, fresh: bool, near_age: float) -> tuple[int, str]:
        """How many of ``need`` bytes fit, and why not all of them ('' if they do)."""
        room, why = need, ""
        cap = self.budget.max_bytes
        if cap is not None:
            used = self.used(fresh=True) if fresh else self._current(need, near_age)
            if used + need > cap:
                room = max(cap - used, 0)
                why = (
                    f"store budget of {cap} bytes ({human(cap)}, INGESTQ_MAX_BYTES) has "
                    f"{used} bytes ({human(used)}) in use, {need} more needed"
                )
        reserve = self.budget.min_free
        if reserve is not None:
            free = self.free()
            if free - need < reserve:
                fits = max(free - reserve, 0)
                if fits < room or not why:
                    room = min(room, fits)
                    why = (
                        f"free-space reserve of {reserve} bytes ({human(reserve)}, "
                        f"INGESTQ_MIN_FREE) on {self.layout.root}: {free} bytes "
                        f"({human(free)}) free, {need} more needed"
                    )
        return room, why

    def free(self) -> int:
        """Bytes available to this user on the root's filesystem (``statvfs``)."""
        try:
            st = os.statvfs(self.layout.root)
        except OSError as e:
            raise from_os_error(e, f"statvfs {self.layout.root}") from e
        return st.f_bavail * st.f_frsize

    def room(self, need: int, *, near_age: float = NEAR_REFRESH) -> tuple[int, str]:
        """How many of ``need`` bytes may be written now (``need`` when the budget has
        room), and the reason when fewer. The running figure is trusted for ``near_age``
        seconds within a margin of the cap. Before answering fewer it measures the use
        again, calls ``on_pressure`` once and measures once more."""
        if need <= 0 or not self.budget.limited:
            return need, ""
        room, why = self._room(need, False, near_age)
        if not why:
            return room, why
        room, why = self._room(need, True, near_age)
        if why and self.on_pressure is not None:
            self.on_pressure()
            room, why = self._room(need, True, near_age)
        return room, why

    def check(self, need: int, what: str) -> None:
        """Raise ResourceExhausted ``<what>: <budget>: <use>, <need> more needed`` unless
        ``need`` more bytes fit in the budget. Within a margin of the cap the use is
        measured afresh (this is the check before an ingest of known size starts)."""
        room, why = self.room(need, near_age=0.0)
        if room < need:
            raise errdefs.ResourceExhausted(f"{what}: {why}")


__all__ = [
    "FAR_REFRESH",
    "NEAR_REFRESH",
    "UNITS",
    "Budget",
    "BudgetMeter",
    "human",
    "measure",
    "parse_size",
]
