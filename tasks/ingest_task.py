"""The Celery ingest task (``ingestq.ingest``): the ingest core on a worker.

Arguments (all JSON): ``request`` (:meth:`tasks.ingest.IngestRequest.to_json`), and the
counters ``lock_waits`` and ``source_retries`` carried from retry to retry.

Returns the committed blob's Info as JSON (``digest``, ``size``, ``created_at``,
``updated_at``, ``labels``) plus ``ref``, ``fetched``, ``bytes_fetched`` and
``resumed_from``.

How a job waits and fails:

* Ref locked by another writer: ``self.retry`` with a capped exponential countdown and
  jitter (0.1 s doubling to ``INGESTQ_LOCK_WAIT_CAP``), unbounded in number. The
  job shows RETRY with the reason (the Unavailable "ref ... locked for ...", with the
  holder and its heartbeat in the details). A retry frees the worker's slot instead of
  sleeping in it (with prefetch 1, a sleeping wait would block other digests), and its
  seconds-long countdown stays far below the visibility timeout. When the holder
  commits, the next attempt finds the digest and returns without fetching.
* Unavailable from the source (429/503/5xx, timeouts, transport errors) or a lost
  lease: retried up to ``INGESTQ_MAX_SOURCE_RETRIES`` times, countdown = capped
  exponential backoff, at least the server's Retry-After; then FAILURE(Unavailable).
* Any other errdefs kind (NotFound, InvalidArgument, PermissionDenied,
  Unauthenticated, FailedPrecondition, DataLoss, Canceled, ...): FAILURE at once.
  Anything else becomes Unknown with its message.
* Redelivered after a lost worker (``task_reject_on_worker_lost``, or the visibility
  timeout): counted in the job record; past ``INGESTQ_MAX_REDELIVERIES`` the job fails
  with Aborted instead of looping (a blob whose ingest always kills its process).
* A failure's errdefs error record is also written to the job record
  (:mod:`ingestq.tasks.records`); the exception Celery stores is the errdefs class itself.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery import Task

from ingestq import errdefs
from ingestq.fetch.specs import source_from_spec
from ingestq.ingest.attempt import ingest_once
from ingestq.ingest.hooks import Hooks
from ingestq.ingest.outcome import RefBusy
from ingestq.ingest.request import IngestRequest
from ingestq.jobs.config import Settings, open_store, redis_client
from ingestq.jobs.retry import backoff
from ingestq.store.codec import info_to_json
from ingestq.store.local import LocalStore
from ingestq.tasks import metrics
from ingestq.tasks.app import app, settings_of
from ingestq.tasks.ingest_hooks import worker_hooks
from ingestq.tasks.lease import RedisLeaseLocker
from ingestq.tasks.names import TASK_INGEST
from ingestq.tasks.records import JobRecords

CANCEL_POLL = 0.5


@dataclass
class Runtime:
    """What a worker process needs, made once per process (after the pool fork)."""

    settings: Settings
    store: LocalStore
    locker: RedisLeaseLocker
    client: redis.Redis
    records: JobRecords


_runtime: Runtime | None = None
_runtime_pid = -1
_runtime_mutex = threading.Lock()


def runtime() -> Runtime:
    """This process's Runtime (store with the Redis lease locker, clients)."""
    global _runtime, _runtime_pid
    with _runtime_mutex:
        if _runtime is None or _runtime_pid != os.getpid():
            settings = settings_of(app)
            if settings.lock_url is None:
                raise errdefs.FailedPrecondition("no Redis configured for leases")
            locker = RedisLeaseLocker(settings.lock_url, settings.lease_ttl)
            store = open_store(settings, [locker])
            client = redis_client(settings.lock_url, socket_timeout=10.0)
            _runtime = Runtime(
                settings, store, locker, client, JobRecords(client, settings.result_expires)
            )
            _runtime_pid = os.getpid()
        return _runtime


class _JobHooks(Hooks):
    def __init__(self, records: JobRecords, job_id: str) -> None:
        self._records = records
        self._job_id = job_id
        self._next_poll = time.monotonic() + CANCEL_POLL

    def cancelled(self) -> bool:
        now = time.monotonic()
        if now < self._next_poll:
            return False
        self._next_poll = now + CANCEL_POLL
        return self._records.cancel_requested(self._job_id)


def _busy_error(busy: RefBusy) -> errdefs.Unavailable:
    details = dict(busy.error.details)
    if busy.holder is not None:
        details.update(
            holder=busy.holder.id,
            holder_heartbeat_at=busy.holder.heartbeat_at.isoformat(),
            holder_fence=str(busy.holder.fence),
        )
    return errdefs.Unavailable(busy.error.message, details)


def _fail(rt: Runtime | None, job_id: str, err: errdefs.ErrdefsError, started: float) -> None:
    metrics.JOBS.labels("failed", err.name).inc()
    metrics.DURATION.labels("failed").observe(time.monotonic() - started)
    if rt is not None:
        rt.records.set_error(job_id, err)


@app.task(  # type: ignore[untyped-decorator]
    bind=True,
    name=TASK_INGEST,
    max_retries=None,
    acks_late=True,
    reject_on_worker_lost=True,
)
def ingest_task(
    self: Task, request: dict[str, Any], lock_waits: int = 0, source_retries: int = 0
) -> dict[str, Any]:
    """Ingest one blob (see the module docstring)."""
    started = time.monotonic()
    job_id: str = self.request.id or ""
    rt: Runtime | None = None
    try:
        rt = runtime()
        req = IngestRequest.from_json(request)
        if job_id and rt.records.cancel_requested(job_id):
            raise errdefs.Canceled(f"job {job_id} canceled")
        delivery = self.request.delivery_info or {}
        if job_id and delivery.get("redelivered"):
            times = rt.records.count_redelivery(job_id)
            if times > rt.settings.max_redeliveries:
                raise errdefs.Aborted(
                    f"job {job_id} redelivered {times} times: its worker was lost each time"
                )
        source = source_from_spec(req.source, rt.settings.fetch_options())
        result = ingest_once(
            rt.store,
            source,
            req,
            hooks=worker_hooks(rt.locker, job_id, _JobHooks(rt.records, job_id)),
        )
    except RefBusy as busy:
        assert rt is not None
        metrics.LOCK_WAITS.inc()
        metrics.JOBS.labels("retried", "Unavailable").inc()
        countdown = backoff(lock_waits, 0.1, rt.settings.lock_wait_cap)
        raise self.retry(
            exc=_busy_error(busy),
            countdown=countdown,
            args=[request],
            kwargs={"lock_waits": lock_waits + 1, "source_retries": source_retries},
            max_retries=None,
        ) from None
    except errdefs.Unavailable as e:
        settings = rt.settings if rt is not None else Settings()
        if source_retries < settings.max_source_retries:
            metrics.JOBS.labels("retried", e.name).inc()
            countdown = backoff(source_retries, 1.0, settings.retry_cap)
            after = e.details.get("retry_after")
            if after is not None:
                countdown = max(countdown, min(float(after), settings.retry_cap))
            raise self.retry(
                exc=errdefs.Unavailable(e.message, e.details),
                countdown=countdown,
                args=[request],
                kwargs={"lock_waits": lock_waits, "source_retries": source_retries + 1},
                max_retries=None,
            ) from None
        _fail(rt, job_id, e, started)
        raise errdefs.Unavailable(e.message, e.details) from None
    except errdefs.ErrdefsError as e:
        kind = errdefs.KINDS[e.name]
        clean = kind(e.message, e.details)
        _fail(rt, job_id, clean, started)
        raise clean from None
    except Exception as e:
        unknown = errdefs.from_exception(e)
        clean = errdefs.KINDS[unknown.name](unknown.message, unknown.details)
        _fail(rt, job_id, clean, started)
        raise clean from None
    outcome = "succeeded" if result.fetched else "deduplicated"
    metrics.JOBS.labels(outcome, "").inc()
    metrics.DURATION.labels(outcome).observe(time.monotonic() - started)
    out = info_to_json(result.info)
    out.update(
        ref=req.ref,
        fetched=result.fetched,
        bytes_fetched=result.bytes_fetched,
        resumed_from=result.resumed_from,
    )
    return out
