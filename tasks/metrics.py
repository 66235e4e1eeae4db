"""Prometheus metrics of the ingest work (jobs by outcome, bytes, lock waits, durations),
the exporter, and :class:`MetricsHooks`, the ingest-core subscriber that counts bytes,
resumes and lock waits.

Celery's prefork pool runs tasks in child processes, so when a worker exports metrics
(``INGESTQ_METRICS_PORT`` / ``ingestq worker --metrics-port``) the client library runs
in multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is set (to a fresh temporary
directory unless given) before this module's metrics are made, every process writes
its samples there, and the exporter in the worker's main process aggregates them.
"""

from __future__ import annotations

import os
import sys
import tempfile


def _prepare_multiprocess() -> None:
    if os.environ.get("INGESTQ_METRICS_PORT") and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ingestq-metrics-")
        values = sys.modules.get("prometheus_client.values")
        if values is not None:
            # Another library (Flower's Celery command plugin, loaded with Celery's
            # CLI) imported prometheus_client first, which chose single-process values
            # then; metrics made from here on read the class again.
            values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


_prepare_multiprocess()

import prometheus_client  # noqa: E402 - must follow the multiprocess setup above
from prometheus_client import multiprocess  # noqa: E402

from ingestq.ingest.hooks import Hooks  # noqa: E402
from ingestq.ingest.outcome import RefBusy  # noqa: E402
from ingestq.ingest.request import IngestRequest  # noqa: E402

JOBS = prometheus_client.Counter(
    "ingestq_jobs",
    "Ingest job attempts by outcome (succeeded, deduplicated, failed, retried) and kind.",
    ["outcome", "kind"],
)
BYTES = prometheus_client.Counter("ingestq_bytes_fetched", "Bytes fetched from sources.")
LOCK_WAITS = prometheus_client.Counter(
    "ingestq_lock_waits", "Times a job found its ref locked and backed off."
)
RESUMES = prometheus_client.Counter(
    "ingestq_resumes", "Ingests that resumed from a stored offset greater than zero."
)
DURATION = prometheus_client.Histogram(
    "ingestq_job_duration_seconds",
    "Duration of one job attempt by outcome.",
    ["outcome"],
    buckets=(0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
STORE_BYTES = prometheus_client.Gauge(
    "ingestq_store_bytes",
    "Bytes of the committed blobs in the store, as of the last gc run.",
    multiprocess_mode="mostrecent",
)
STORE_BLOBS = prometheus_client.Gauge(
    "ingestq_store_blobs",
    "Committed blobs in the store, as of the last gc run.",
    multiprocess_mode="mostrecent",
)
GC_RUNS = prometheus_client.Counter(
    "ingestq_gc_runs", "Garbage collection runs by outcome (ok, failed).", ["outcome"]
)
GC_BYTES_FREED = prometheus_client.Counter(
    "ingestq_gc_bytes_freed", "Bytes of blobs and partial ingests gc removed."
)


class MetricsHooks(Hooks):
    """Counts one ingest's fetched bytes (:data:`BYTES`, chunk by chunk), its resumes
    (:data:`RESUMES`) and its lock waits (:data:`LOCK_WAITS`). Keeps the last offset,
    so use one per ingest."""

    def __init__(self) -> None:
        self._offset: int | None = None

    def started(self, request: IngestRequest, source: str) -> None:
        self._offset = None

    def resumed(self, offset: int) -> None:
        RESUMES.inc()

    def progress(self, offset: int, total: int) -> None:
        if self._offset is not None and offset > self._offset:
            BYTES.inc(offset - self._offset)
        self._offset = offset

    def lock_wait(self, busy: RefBusy, delay: float) -> None:
        LOCK_WAITS.inc()


def start_exporter(port: int, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``port``, aggregating every process of the worker."""
    registry: prometheus_client.CollectorRegistry | None = None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    if registry is None:
        prometheus_client.start_http_server(port, addr)
    else:
        prometheus_client.start_http_server(port, addr, registry=registry)


def process_exited(pid: int) -> None:
    """Tell multiprocess mode that a pool process is gone."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
