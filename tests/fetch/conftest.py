"""Fixtures of the fetch tests: ``blob_server``, the misbehaving HTTP blob server on
127.0.0.1, and ``store_root``, both shared with the queue tests
(:mod:`tests.tasks.conftest`)."""

from __future__ import annotations

from tests.tasks.conftest import store_root as store_root

__all__ = ["store_root"]
