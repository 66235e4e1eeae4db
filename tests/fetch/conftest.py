"""Fixtures of the fetch tests: the misbehaving HTTP blob server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tasks.blobserver import BlobServer


@pytest.fixture
def blob_server() -> Iterator[BlobServer]:
    """A started :class:`BlobServer`, stopped after the test."""
    server = BlobServer().start()
    try:
        yield server
    finally:
        server.stop()
