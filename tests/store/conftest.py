"""Fixtures of the store tests."""

from __future__ import annotations

import pytest

from ingestq.store.local import writer as writer_module


@pytest.fixture(autouse=True)
def _no_writers_left_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test with no writer counted open in this process. Tests that leave
    writers unclosed on purpose (crash simulations) would otherwise leave counts behind
    for the tests that run after them in the same process, and a copy hashes on the
    side only while one writer is open."""
    monkeypatch.setattr(writer_module, "_open_writers", 0)
