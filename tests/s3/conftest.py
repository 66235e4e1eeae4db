"""The S3 tests' fixtures beyond tests/conftest.py: the queue tests' worker cluster and
the API tests' ``ingestq serve`` processes (the S3 store's end-to-end tests run real
workers and servers too)."""

from __future__ import annotations

from tests.api.conftest import serve_process_factory
from tests.tasks.conftest import cluster_factory

__all__ = ["cluster_factory", "serve_process_factory"]
