"""Fixtures of the fetch tests: ``blob_server``, the misbehaving HTTP blob server on
127.0.0.1, shared with the queue tests (:mod:`tests.tasks.conftest`)."""

from __future__ import annotations

from tests.tasks.conftest import blob_server as blob_server

__all__ = ["blob_server"]
