"""The S3 tests' fixtures beyond tests/conftest.py: the queue tests' blob server and
worker cluster (the S3 store's end-to-end tests run real workers too)."""

from __future__ import annotations

from tests.tasks.conftest import blob_server, cluster_factory

__all__ = ["blob_server", "cluster_factory"]
