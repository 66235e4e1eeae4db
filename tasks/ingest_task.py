"""The Celery ingest task (``ingestq.ingest``): the ingest core on a worker.

Arguments (all JSON): ``request`` (:meth:`ingestq.ingest.request.IngestRequest.to_json`),
the counters ``lock_waits`` and ``source_retries`` carried from retry to retry, and
``max_source_retries`` (the producer's ``--retries``; default the settings').

Returns the committed blob's Info as JSON (``digest``, ``size``, ``created_at``,
``updated_at``, ``labels``) plus ``ref``, ``fetched``, ``bytes_fetched`` and
``resumed_from``.

How a job waits and fails:

* Ref locked by another writer: ``self.retry`` with the countdown of
  ``Settings.lock_wait_retry`` (:class:`ingestq.jobs.retry.RetryPolicy`: 0.1 s doubling
  to ``INGESTQ_LOCK_WAIT_CAP``, with jitter), unbounded in number. The
  job shows RETRY with the reason (the Unavailable "ref ... locked for ...", with the
  holder and its heartbeat in the details). A retry frees the worker's slot instead of
  sleeping in it (with prefetch 1, a sleeping wait would block other digests), and its
  seconds-long countdown stays far below the visibility timeout. When the holder
  commits, the next attempt finds the digest and returns without fetching.
* Unavailable from the source (429/503/5xx, timeouts, transport errors) or a lost
  lease: retried per ``Settings.source_retry`` (the one retry policy, shared with the
  in-process runners): up to ``INGESTQ_MAX_SOURCE_RETRIES`` times, countdown = capped
  exponential backoff, at least the server's Retry-After; then FAILURE(Unavailable).
  Each retry writes ``attempt``, ``max_attempts`` and ``next_at`` to the job record, so
  a waiting producer can show them.
* Any other errdefs kind (NotFound, InvalidArgument, PermissionDenied,
  Unauthenticated, FailedPrecondition, DataLoss, Canceled, ...): FAILURE at once.
  Anything else becomes Unknown with its message.
* Redelivered after a lost worker (``task_reject_on_worker_lost``, or the visibility
  timeout): counted in the job record; past ``INGESTQ_MAX_REDELIVERIES`` the job fails
  with Aborted instead of looping (a blob whose ingest always kills its process).
* The lease's release is put off until the result is written and runs in the same
  round trip (:func:`ingestq.tasks.lease.defer_releases`,
  :class:`ingestq.tasks.backend.IngestqRedisBackend`); a release the result write did
  not run (another Redis, no result written) runs when the task ends (``task_postrun``).
* STARTED is written only once the write has lasted a heartbeat (``_Started``; no
  ``task_track_started`` for this task): a job done in milliseconds costs no status
  board entry and no STARTED write, only the lease's acquire and release.
* Canceled: the job's cancel flag is read by the lease's acquire script, in the same
  round trip (:meth:`ingestq.tasks.lease.RedisLeaseLocker.guarded`), so a canceled job
  takes no lease and fetches nothing. A small local file takes no lease: the ingest
  core asks the hooks (one HEXISTS) before reading it. A job that reads the flag
  neither way (its blob is already committed) reads it once at the end, a redelivered
  one at the start. While it runs, the hooks poll the flag every :data:`CANCEL_POLL`
  seconds.
* A failure's errdefs error record is also written to the job record
  (:mod:`ingestq.tasks.records`); the exception Celery stores is the errdefs class itself
  (:func:`ingestq.tasks.codec.encode`).

Imports celery, errdefs, store, fetch, ingest, the job settings, retry policy and cancel
hooks, and this package's app, runtime, codec and metrics.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Task, signals

from ingestq import errdefs
from ingestq.fetch.specs import source_from_spec
from ingestq.ingest.attempt import ingest_once
from ingestq.ingest.outcome import IngestResult, RefBusy
from ingestq.ingest.request import IngestRequest
from ingestq.jobs.cancel import CancelHooks
from ingestq.jobs.config import Settings
from ingestq.jobs.records import record_error
from ingestq.store.codec import info_to_json
from ingestq.tasks import metrics
from ingestq.tasks.app import app
from ingestq.tasks.codec import encode
from ingestq.tasks.ingest_hooks import worker_hooks
from ingestq.tasks.joblog import EXPECTED_ERRORS
from ingestq.tasks.lease import defer_releases, flush_releases
from ingestq.tasks.names import TASK_INGEST
from ingestq.tasks.runtime import Runtime, runtime

log = logging.getLogger(__name__)

#: Seconds between two reads of a running job's cancel flag (the first read is part of
#: the lease's acquire, before anything is fetched; the hooks read it again a poll later).
CANCEL_POLL = 0.5


def _busy_error(busy: RefBusy) -> errdefs.Unavailable:
    details = dict(busy.error.details)
    if busy.holder is not None:
        details.update(
            holder=busy.holder.id,
            holder_heartbeat_at=busy.holder.heartbeat_at.isoformat(),
            holder_fence=str(busy.holder.fence),
        )
    return errdefs.Unavailable(busy.error.message, details)


def canceled_error(job_id: str) -> errdefs.Canceled:
    """The error of job ``job_id``, canceled."""
    return errdefs.Canceled(f"job {job_id} canceled")


def _record_retry(
    rt: Runtime, job_id: str, attempt: int, max_attempts: int | None, countdown: float
) -> None:
    """Write where the job's retries stand to its record (best effort)."""
    fields = {"attempt": str(attempt), "max_attempts": str(max_attempts or ""),
              "next_at": f"{time.time() + countdown:.3f}"}  # fmt: skip
    try:
        rt.records.update(job_id, fields)
    except errdefs.Unavailable:
        return


class _Started:
    """Writes the job's STARTED result once its write has lasted a heartbeat (called
    by the lease heartbeat thread), never after the task has ended: a job done within
    a heartbeat goes from QUEUED straight to its outcome, saving Celery's two
    round trips of ``task_track_started``."""

    def __init__(self, task: Task, job_id: str) -> None:
        self._task = task
        self._request = task.request
        self._job_id = job_id
        self._lock = threading.Lock()
        self._ended = False

    def __call__(self) -> None:
        with self._lock:
            if self._ended or not self._job_id:
                return
            meta = {"pid": os.getpid(), "hostname": self._request.hostname}
            try:
                self._task.backend.store_result(self._job_id, meta, "STARTED",
                                                request=self._request)  # fmt: skip
            except Exception as e:  # best effort: the outcome is written anyway
                log.info("job %s: could not record STARTED: %s", self._job_id, e)

    def end(self) -> None:
        """The task is returning: no STARTED from now on (it would hide the outcome)."""
        with self._lock:
            self._ended = True


def fail_job(
    rt: Runtime | None, job_id: str, err: BaseException, started: float
) -> errdefs.ErrdefsError:
    """Count and record the failure ``err``; what the task raises for it."""
    clean = encode(err)
    metrics.JOBS.labels("failed", clean.name).inc()
    metrics.DURATION.labels("failed").observe(time.monotonic() - started)
    if rt is not None and job_id:
        record_error(rt.records, job_id, clean)
    return clean


@app.task(  # type: ignore[untyped-decorator]
    bind=True,
    name=TASK_INGEST,
    Strategy="ingestq.tasks.coalesce:strategy",  # small jobs run gathered: tasks/coalesce.py
    track_started=False,  # see _Started
    max_retries=None,
    acks_late=True,
    reject_on_worker_lost=True,
    throws=EXPECTED_ERRORS,
)
def ingest_task(
    self: Task,
    request: dict[str, Any],
    lock_waits: int = 0,
    source_retries: int = 0,
    max_source_retries: int | None = None,
    parent: str | None = None,
) -> dict[str, Any]:
    """Ingest one blob (see the module docstring). ``parent``: the pull this job is a
    child of (its success is counted off there: :mod:`ingestq.tasks.pull_task`)."""
    live = _Started(self, self.request.id or "")
    defer_releases()  # run by the result write (tasks/backend.py), else at postrun
    try:
        return _ingest(self, live, request, lock_waits, source_retries, max_source_retries,
                       parent)  # fmt: skip
    finally:
        live.end()


def _ingest(
    self: Task,
    live: _Started,
    request: dict[str, Any],
    lock_waits: int,
    source_retries: int,
    max_source_retries: int | None,
    parent: str | None,
) -> dict[str, Any]:
    """The body of :func:`ingest_task`."""
    started = time.monotonic()
    job_id: str = self.request.id or ""
    rt: Runtime | None = None
    try:
        rt = runtime()
        req = IngestRequest.from_json(request)
        cancel = CancelHooks(rt.records, job_id, poll=CANCEL_POLL)
        delivery = self.request.delivery_info or {}
        if job_id and delivery.get("redelivered"):
            if cancel.cancelled():
                raise canceled_error(job_id)
            times = rt.records.count_redelivery(job_id)
            if times > rt.settings.max_redeliveries:
                raise errdefs.Aborted(
                    f"job {job_id} redelivered {times} times: its worker was lost each time"
                )
        result = run_attempt(rt, job_id, req, cancel, on_live=live)
    except Exception as e:
        again = retry_or_fail(rt, job_id, e, lock_waits, source_retries, max_source_retries,
                              started)  # fmt: skip
        raise self.retry(
            exc=again.error,
            countdown=again.countdown,
            args=[request],
            kwargs={
                "lock_waits": again.lock_waits,
                "source_retries": again.source_retries,
                "max_source_retries": max_source_retries,
                "parent": parent,
            },
            max_retries=None,
        ) from None
    return succeeded(req, result, started)


def run_attempt(
    rt: Runtime,
    job_id: str,
    req: IngestRequest,
    cancel: CancelHooks,
    on_live: Callable[[], None] | None = None,
) -> IngestResult:
    """One attempt of job ``job_id`` on this worker: the ingest core with the worker's
    hooks (``cancel`` among them; ``on_live`` as for
    :class:`~ingestq.tasks.ingest_hooks.LeaseStatusHooks`). The cancel flag is read by
    the lease's acquire (one round trip for both); a small file takes no lease and the
    core asks the hooks before reading it; a job that read the flag neither way (its
    blob is committed) reads it at the end. Raises what the core raises, Canceled for a
    job canceled at the end."""
    source = source_from_spec(req.source, rt.settings.fetch_options())
    hooks = worker_hooks(rt.locker, job_id, cancel, on_live=on_live)
    if not job_id:
        return ingest_once(rt.store, source, req, hooks=hooks)
    flag_key, flag_field = rt.records.cancel_flag(job_id)
    with rt.locker.guarded(flag_key, flag_field, lambda: canceled_error(job_id),
                           on_read=cancel.read_elsewhere) as guard:  # fmt: skip
        result = ingest_once(rt.store, source, req, hooks=hooks)
    if not guard.checked and cancel.cancelled():
        raise canceled_error(job_id)
    return result


@dataclass(frozen=True)
class Again:
    """A job to run again: the error its attempt ended with, the seconds to wait and
    the counters its next attempt carries."""

    error: errdefs.ErrdefsError
    countdown: float
    lock_waits: int
    source_retries: int


def retry_or_fail(
    rt: Runtime | None,
    job_id: str,
    err: Exception,
    lock_waits: int,
    source_retries: int,
    max_source_retries: int | None,
    started: float,
) -> Again:
    """How the attempt that raised ``err`` goes on: a busy ref waits per the lock-wait
    policy, a retryable error per the source-retry policy (bounded by
    ``max_source_retries`` when given; the retry is written to the job record). Raises
    the errdefs error to end the job with (counted and recorded) when ``err`` is not
    retried."""
    if isinstance(err, RefBusy):
        assert rt is not None
        metrics.LOCK_WAITS.inc()
        metrics.JOBS.labels("retried", "Unavailable").inc()
        countdown = rt.settings.lock_wait_retry.backoff(lock_waits)
        return Again(_busy_error(err), countdown, lock_waits + 1, source_retries)
    settings = rt.settings if rt is not None else Settings()
    policy = settings.source_retry
    if max_source_retries is not None and max_source_retries >= 0:
        policy = policy.with_retries(max_source_retries)
    delay = policy.delay(source_retries, err)
    if delay is None:
        raise fail_job(rt, job_id, err, started) from None
    clean = encode(err)
    metrics.JOBS.labels("retried", clean.name).inc()
    if rt is not None and job_id:
        _record_retry(rt, job_id, source_retries + 1, policy.max_attempts, delay)
    return Again(clean, delay, lock_waits, source_retries + 1)


def succeeded(req: IngestRequest, result: IngestResult, started: float) -> dict[str, Any]:
    """Count the job's success; its result (the blob's Info as JSON, its ref, whether
    and how much was fetched, where it resumed from)."""
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


def _flush_releases(**_: Any) -> None:
    """A task has ended (its result written): run the lease releases still put off."""
    flush_releases()


signals.task_postrun.connect(_flush_releases, weak=False)
