"""Fixtures of the fetch tests: ``store_root``, shared with the queue tests
(:mod:`tests.tasks.conftest`); ``blob_server`` comes from ``tests/conftest.py``."""

from __future__ import annotations

from tests.tasks.conftest import store_root as store_root

__all__ = ["store_root"]
