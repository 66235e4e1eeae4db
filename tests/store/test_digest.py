"""Hashing through a small buffer (``update_through``) gives the digest of the data."""

from __future__ import annotations

import hashlib
import os

import pytest

from ingestq.store.digest import THROUGH_PIECE, new_hasher, update_through


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
