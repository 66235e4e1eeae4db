"""Feeding a hasher from a helper thread (``ingestq.store.hashfeed``): through a small
buffer or straight, the digest is the data's; the process keeps the way it timed
faster."""

from __future__ import annotations

import hashlib
import os

import pytest

from ingestq.store import hashfeed
from ingestq.store.digest import new_hasher
from ingestq.store.hashfeed import (
    SAMPLES,
    STRAIGHT,
    THROUGH,
    THROUGH_PIECE,
    WARMUP,
    chosen_way,
    faster_way,
    feed,
    update_through,
)


@pytest.mark.parametrize(
    "size", [0, 1, THROUGH_PIECE - 1, THROUGH_PIECE, THROUGH_PIECE + 1, 3 * THROUGH_PIECE + 7]
)
def test_update_through_a_buffer_hashes_exactly_the_data(size: int) -> None:
    data = os.urandom(size)
    hasher = new_hasher("sha256")
    buffer = bytearray(THROUGH_PIECE)
    update_through(hasher, memoryview(data), buffer)
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    if size:  # the buffer held the last piece, copied from the data
        last = size - (size - 1) // THROUGH_PIECE * THROUGH_PIECE
        assert bytes(buffer[:last]) == data[-last:]


def test_feed_times_both_ways_then_keeps_one_and_every_digest_is_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hashfeed, "_chooser", hashfeed._Chooser())  # a fresh process's
    sizes = [1, THROUGH_PIECE - 1]  # too short to time: no timing taken
    timed = 2 * (WARMUP + SAMPLES)  # alternating ways, the first WARMUP of each not counted
    sizes += [THROUGH_PIECE + i for i in range(timed)]
    sizes += [3 * THROUGH_PIECE + 5, 7]  # by the chosen way
    buffer = bytearray(THROUGH_PIECE)
    hasher, whole = new_hasher("sha256"), hashlib.sha256()
    for n, size in enumerate(sizes):
        data = os.urandom(size)
        feed(hasher, memoryview(data), buffer)
        whole.update(data)
        if n < 2 + timed - 1:
            assert chosen_way() is None, n
    assert chosen_way() in (STRAIGHT, THROUGH)
    assert hasher.hexdigest() == whole.hexdigest()


def test_the_faster_way_is_the_lower_median() -> None:
    assert faster_way([1.0, 1.0, 1.0, 90.0], [2.0, 2.0, 2.0, 2.0]) == STRAIGHT  # one outlier
    assert faster_way([3.0, 3.0, 3.0], [1.0, 1.0, 50.0]) == THROUGH
    assert faster_way([2.0, 2.0], [2.0, 2.0]) == STRAIGHT  # a tie


def test_the_warm_up_timings_do_not_count() -> None:
    # Through the buffer is slow for its first four pieces: counted, those would make
    # the median of the first SAMPLES slow and choose straight; the last SAMPLES,
    # after the warm-up, hold only two of them and choose through.
    chooser = hashfeed._Chooser()
    for i in range(WARMUP + SAMPLES):
        chooser.record(THROUGH, 100.0 if i < 2 * WARMUP else 1.0, 1)
        chooser.record(STRAIGHT, 2.0, 1)
        assert chooser.way is None or i == WARMUP + SAMPLES - 1
    assert chooser.way == THROUGH
    assert faster_way([2.0] * SAMPLES, ([100.0] * 2 * WARMUP + [1.0] * SAMPLES)[:SAMPLES]) == (
        STRAIGHT
    )  # what counting from the first timing would have chosen
