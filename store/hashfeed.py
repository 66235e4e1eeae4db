"""Feeding large pieces to a hasher from a helper thread, the faster of two ways.

A helper thread hashes bytes another core has just written (the writer's hash queue
and its parallel hash, :mod:`ingestq.store.local`). It can hash them straight from
memory, or copy each :data:`THROUGH_PIECE` bytes into a small buffer that stays in its
core's cache and hash that (:func:`update_through`). Which is faster depends on the
CPU, measured by ``benchmarks/bench_store.py`` on the project's 2-core machines: on one,
sha256 through the buffer ran at 1.55 GB/s against 1.1 GB/s straight; on another,
straight ran at 1.96 GiB/s against 1.82 through.

So :func:`feed` times both ways on a process's first large pieces (alternating, each
piece hashed once, by one way) and keeps the faster for the rest of the process. The
first :data:`WARMUP` timings of each way are not counted: they include the buffer's
first page faults and the helper's start (measured here: 350-650 MB/s on the first
piece through the buffer against 1.2-1.5 GB/s after), which decided for the slower way
in two of three processes on a machine where the buffer keeps the store 20% faster.
The digest is exact either way; only the speed depends on the choice.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

from ingestq.store.digest import Hasher

#: Bytes :func:`update_through` copies into its buffer at a time.
THROUGH_PIECE = 256 * 1024

#: Timed pieces of each way after which a process keeps the faster one.
SAMPLES = 8
#: Timings of each way not counted first (cold buffer, helper start).
WARMUP = 2

STRAIGHT = "straight"
THROUGH = "through"


def update_through(hasher: Hasher, data: memoryview, buffer: bytearray) -> None:
    """Feed ``data`` (a byte view) to ``hasher`` :data:`THROUGH_PIECE` bytes at a time,
    each copied into ``buffer`` (at least that large) first."""
    view = memoryview(buffer)
    for start in range(0, len(data), THROUGH_PIECE):
        piece = data[start : start + THROUGH_PIECE]
        n = len(piece)
        view[:n] = piece
        hasher.update(view[:n])


def faster_way(straight: Sequence[float], through: Sequence[float]) -> str:
    """:data:`STRAIGHT` or :data:`THROUGH`: the way whose median seconds per byte is
    lower in these timings (straight on a tie)."""
    return THROUGH if _median(through) < _median(straight) else STRAIGHT


def _median(values: Sequence[float]) -> float:
    # Not statistics.median: that module costs the command line ~2 ms to import.
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


class _Chooser:
    """The timings of this process's first large pieces, then its choice."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timings: dict[str, list[float]] = {STRAIGHT: [], THROUGH: []}
        self.way: str | None = None

    def next_way(self) -> str:
        """The way with fewer timings so far (alternating from the first)."""
        with self._lock:
            return (
                THROUGH if len(self._timings[THROUGH]) < len(self._timings[STRAIGHT]) else STRAIGHT
            )

    def record(self, way: str, seconds: float, size: int) -> None:
        """Keep one timing; choose once each way has :data:`WARMUP` + :data:`SAMPLES`,
        by the last :data:`SAMPLES` of each."""
        with self._lock:
            if self.way is not None:
                return
            self._timings[way].append(seconds / size)
            if all(len(t) >= WARMUP + SAMPLES for t in self._timings.values()):
                self.way = faster_way(
                    self._timings[STRAIGHT][WARMUP:], self._timings[THROUGH][WARMUP:]
                )

    def after_fork(self) -> None:
        """A forked child keeps the choice (same CPU) but not a lock another thread of
        the parent may have held."""
        self._lock = threading.Lock()


_chooser = _Chooser()
os.register_at_fork(after_in_child=_chooser.after_fork)


def feed(hasher: Hasher, data: memoryview, buffer: bytearray) -> None:
    """Feed ``data`` to ``hasher`` straight, or through ``buffer`` (at least
    :data:`THROUGH_PIECE` bytes), whichever this process found faster (module
    docstring). Until it has chosen, pieces of at least :data:`THROUGH_PIECE` bytes are
    timed, alternating ways; shorter ones go through the buffer."""
    way = _chooser.way
    if way is None:
        if len(data) < THROUGH_PIECE:  # too short to time well
            update_through(hasher, data, buffer)
            return
        way = _chooser.next_way()
        start = time.perf_counter()
        _feed_by(way, hasher, data, buffer)
        _chooser.record(way, time.perf_counter() - start, len(data))
        return
    _feed_by(way, hasher, data, buffer)


def _feed_by(way: str, hasher: Hasher, data: memoryview, buffer: bytearray) -> None:
    if way == STRAIGHT:
        hasher.update(data)
    else:
        update_through(hasher, data, buffer)


def chosen_way() -> str | None:
    """The way :func:`feed` keeps in this process (:data:`STRAIGHT` or
    :data:`THROUGH`), or None while it is still timing both."""
    return _chooser.way


__all__ = [
    "SAMPLES",
    "STRAIGHT",
    "THROUGH",
    "THROUGH_PIECE",
    "WARMUP",
    "chosen_way",
    "faster_way",
    "feed",
    "update_through",
]
