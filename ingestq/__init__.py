"""ingestq: a content-addressable blob store fed by a job queue.

The curated public API. Everything here is importable as ``from ingestq import NAME``;
the names load on first use, so ``import ingestq.store`` pulls in neither Celery, gRPC
nor Redis. The packages beneath, in layer order (each imports only packages above it;
``tests/test_architecture.py`` checks this):

- ``ingestq.errdefs``: the error kinds and their conversions at every boundary.
- ``ingestq.store``: digests, values, the store protocols, the local store and
  everything under a store root (layout, locks, image records, leases, resume hints).
- ``ingestq.fetch``: sources (HTTP, registry, OCI layout, files), references,
  manifests, platforms, ref keys and the one HTTP layer.
- ``ingestq.ingest``: the ingest core (resume, verify, commit) and its hooks.
- ``ingestq.images``: pull planning and finalize, the OCI view, the size walk.
- ``ingestq.jobs``: the one job interface (ingest and pull), the in-process backend,
  settings, job records and the one retry policy.
- ``ingestq.tasks``: the Celery/Redis adapter (``celery -A ingestq.tasks.app worker``):
  the Celery backend of the job interface and ``connect``/``enqueue_*``.
- ``ingestq.api``: containerd's gRPC API (server and client store); no Celery.
- ``ingestq.worker``: the processes and the ``ingestq`` command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingestq.jobs.api import IngestJob, JobClient, JobState, Progress, PullJob
    from ingestq.store import Descriptor, Digest, Info, LocalStore, Status
    from ingestq.tasks.client import (
        connect,
        enqueue_ingest,
        enqueue_many,
        enqueue_pull,
        get_job,
        get_pull,
    )

__all__ = [
    "Descriptor",
    "Digest",
    "Info",
    "IngestJob",
    "JobClient",
    "JobState",
    "LocalStore",
    "Progress",
    "PullJob",
    "Status",
    "connect",
    "enqueue_ingest",
    "enqueue_many",
    "enqueue_pull",
    "get_job",
    "get_pull",
]

#: Where each public name is defined, loaded on first access.
_LOCATIONS: dict[str, str] = {
    "Descriptor": "ingestq.store",
    "Digest": "ingestq.store",
    "Info": "ingestq.store",
    "LocalStore": "ingestq.store",
    "Status": "ingestq.store",
    "IngestJob": "ingestq.jobs.api",
    "JobClient": "ingestq.jobs.api",
    "JobState": "ingestq.jobs.api",
    "Progress": "ingestq.jobs.api",
    "PullJob": "ingestq.jobs.api",
    "connect": "ingestq.tasks.client",
    "enqueue_ingest": "ingestq.tasks.client",
    "enqueue_many": "ingestq.tasks.client",
    "enqueue_pull": "ingestq.tasks.client",
    "get_job": "ingestq.tasks.client",
    "get_pull": "ingestq.tasks.client",
}


def __getattr__(name: str) -> Any:
    """Load a public name from the module that defines it (PEP 562)."""
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'ingestq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
