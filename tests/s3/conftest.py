"""The S3 tests' fixtures beyond tests/conftest.py: the queue tests' blob server and
worker cluster, and the API tests' ``ingestq serve`` processes (the S3 store's
end-to-end tests run real workers and servers too)."""

from __future__ import annotations

from tests.api.conftest import serve_process_factory
from tests.tasks.conftest import blob_server, cluster_factory

__all__ = ["blob_server", "cluster_factory", "serve_process_factory"]
