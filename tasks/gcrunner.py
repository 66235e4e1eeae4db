"""The periodic gc of the workers: every ``INGESTQ_GC_INTERVAL`` one worker (the holder of
the :data:`GC_REF` Redis lease, through :class:`ingestq.tasks.periodic.Leader`) runs
:func:`ingestq.jobs.gc.run_gc` over the shared store in a thread of its main process,
and updates the metrics (store bytes and blobs, gc runs, bytes freed). Off by default.

Imports the job settings and gc, and this package's lease, leader and metrics.
"""

from __future__ import annotations

import logging

from ingestq import errdefs
from ingestq.jobs.config import Settings, open_store
from ingestq.jobs.gc import run_gc
from ingestq.store.gc import GcReport
from ingestq.tasks.lease import RedisLeaseLocker
from ingestq.tasks.periodic import Leader

log = logging.getLogger(__name__)

#: The lease whose holder is the one gc runner (a ref name no ingest uses).
GC_REF = "ingestq-gc"


class GcRunner:
    """Runs gc every ``settings.gc_interval`` seconds while this worker leads.
    FailedPrecondition without Redis (the lease needs it)."""

    def __init__(self, settings: Settings, node: str) -> None:
        if settings.lock_url is None:
            raise errdefs.FailedPrecondition("the periodic gc needs Redis for its lease")
        self.settings = settings
        locker = RedisLeaseLocker(settings.lock_url, settings.lease_ttl)
        self._locker = locker
        self._leader = Leader(
            locker, GC_REF, node, settings.gc_interval, self.run_once,
            name="ingestq-gc", announce="runs the periodic gc",
        )  # fmt: skip

    def run_once(self) -> GcReport | None:
        """One run when this worker leads (None otherwise); failures are counted and
        raised."""
        from ingestq.tasks import metrics

        if not self._leader.lead():
            return None
        try:
            # The workers' locker: an S3 gc takes the blob locks writers on every host take.
            report = run_gc(open_store(self.settings, [self._locker]), self.settings)
        except Exception:
            metrics.GC_RUNS.labels(outcome="failed").inc()
            raise
        metrics.GC_RUNS.labels(outcome="ok").inc()
        metrics.GC_BYTES_FREED.inc(report.bytes + report.ingest_bytes + report.quarantine_bytes)
        metrics.STORE_BYTES.set(report.kept_bytes)
        metrics.STORE_BLOBS.set(report.kept_blobs)
        log.info(
            "gc: removed %d blobs (%d bytes), %d ingests, %d job records, %d leases, "
            "%d temporary files, %d quarantined files",
            len(report.blobs), report.bytes, len(report.ingests), report.job_records,
            len(report.leases), report.temp_files, len(report.quarantined),
        )  # fmt: skip
        return report

    def start(self) -> None:
        """Run every interval in a daemon thread until :meth:`stop`."""
        self._leader.start()

    def stop(self) -> None:
        """Stop (waiting briefly for a run in progress) and give the lease up."""
        self._leader.stop(5.0)


__all__ = ["GC_REF", "GcRunner"]
