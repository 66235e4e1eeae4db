"""The ingest-core subscribers a worker plugs in: the write's status published through
the Redis lease that protects it (:class:`LeaseStatusHooks`), and :func:`worker_hooks`,
which combines it with the prometheus counters and any other subscriber."""

from __future__ import annotations

import time
from collections.abc import Callable

from ingestq.ingest.hooks import Hooks, IngestHooks, combine
from ingestq.ingest.request import IngestRequest
from ingestq.tasks.lease import RedisLease, RedisLeaseLocker
from ingestq.tasks.metrics import MetricsHooks


class LeaseStatusHooks(Hooks):
    """Feeds the heartbeat of the ref's Redis lease (see :class:`ingestq.tasks.lease.Progress`)
    with the ingest's job id, source, offset, total and rate, and tells the core when
    the lease is lost. ``on_live`` runs once, on the heartbeat thread, when the first
    heartbeat publishes the write (a write done within a heartbeat never calls it).
    Does nothing when this process holds no lease on the ref (a store without the Redis
    locker). Keeps per-ingest state, so use one per ingest."""

    def __init__(
        self,
        locker: RedisLeaseLocker,
        job_id: str = "",
        on_live: Callable[[], None] | None = None,
    ) -> None:
        self._locker = locker
        self._job_id = job_id
        self._on_live = on_live
        self._lease: RedisLease | None = None
        self._started = 0.0
        self._copy_from: int | None = None

    def started(self, request: IngestRequest, source: str) -> None:
        self._lease = self._locker.held(request.ref)
        self._started = time.monotonic()
        self._copy_from = None
        if self._lease is not None:
            p = self._lease.progress
            p.job_id, p.source, p.total = self._job_id, source, request.size
            p.expected = str(request.digest) if request.digest else ""
            p.on_beat = self._on_live
            p.publish = True

    def progress(self, offset: int, total: int) -> None:
        if self._lease is None:
            return
        p = self._lease.progress
        p.total = total
        if self._copy_from is None:  # the copy starts: nothing fetched yet
            self._copy_from = offset
            return
        p.offset = offset
        elapsed = time.monotonic() - self._started
        p.rate = (offset - self._copy_from) / elapsed if elapsed > 0 else 0.0

    def lock_lost(self) -> bool:
        return self._lease is not None and self._lease.lost


def worker_hooks(
    locker: RedisLeaseLocker,
    job_id: str,
    *others: IngestHooks,
    on_live: Callable[[], None] | None = None,
) -> IngestHooks:
    """The subscribers of one ingest on a worker: ``others`` (e.g. cancellation), the
    lease status of ``job_id`` (``on_live`` as for :class:`LeaseStatusHooks`) and the
    prometheus counters. Make one per ingest."""
    return combine(*others, LeaseStatusHooks(locker, job_id, on_live), MetricsHooks())
