"""Queued ingest jobs: publishing ``ingestq.ingest`` and the producer's handle on it
(the :class:`ingestq.jobs.api.IngestJob` protocol).

The handle reads Celery's result meta directly from Redis (:mod:`ingestq.tasks.results`)
and never lets Celery rebuild exceptions: a failure becomes its errdefs error through
the job's stored error record, else by registry lookup of the stored class name
(:mod:`ingestq.tasks.codec`). A tampered meta can never make the producer import,
construct or raise anything but an errdefs kind; a malformed one (or a malformed job
record) is InvalidArgument naming the job. Progress comes from the status board.

Imports errdefs, store, fetch (source names), ingest (the request), the job interface
and this package's Redis adapters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ingestq import errdefs
from ingestq.fetch.specs import source_name
from ingestq.ingest.request import IngestRequest
from ingestq.jobs.api import JobState, Progress, RetryInfo, new_job_id
from ingestq.jobs.records import KIND_INGEST
from ingestq.jobs.wait import poll_outcome
from ingestq.store.codec import info_from_json
from ingestq.store.values import Info
from ingestq.tasks.app import QUEUE
from ingestq.tasks.batching import BATCH_JOBS, BatchEntry, batchable
from ingestq.tasks.codec import error_from_meta
from ingestq.tasks.names import TASK_INGEST, TASK_INGEST_BATCH
from ingestq.tasks.queue.context import Message, QueueContext
from ingestq.tasks.results import state_of

#: The longest pause between two reads of the result while waiting for a job.
MAX_POLL = 0.25
#: Waits of at least this many seconds (or without a timeout) subscribe to the job's
#: result channel (:class:`ingestq.tasks.results.MetaWatch`), which wakes them when the
#: job's meta changes; shorter ones (a progress display's refresh) just poll.
WATCH_MIN = 1.0
#: The longest pause between two reads of the result while subscribed (a safety net:
#: every state change wakes the wait at once).
WATCHED_POLL = 1.0


def watched(timeout: float | None) -> bool:
    """Whether a wait of ``timeout`` seconds subscribes to the result channel."""
    return timeout is None or timeout >= WATCH_MIN


class QueueIngestJob:
    """An ingest job on the Redis queue."""

    def __init__(self, ctx: QueueContext, job_id: str, ref: str | None = None) -> None:
        self._ctx = ctx
        self._id = job_id
        self._ref = ref

    @property
    def id(self) -> str:
        """The job id."""
        return self._id

    @property
    def ref(self) -> str:
        """The ingest ref the job writes (empty if unknown)."""
        if self._ref is None:
            self._ref = self._ctx.records.get(self._id).get("ref", "")
        return self._ref

    def _meta(self) -> dict[str, Any] | None:
        return self._ctx.results.meta(self._id)

    def _known(self) -> bool:
        return bool(self._ctx.records.get(self._id)) or self._meta() is not None

    @property
    def state(self) -> JobState:
        """The job's state (a fresh read); Unavailable when Redis is down,
        InvalidArgument naming the job when its result meta or record is malformed."""
        meta = self._meta()
        if meta is None:
            return JobState.QUEUED if self._ctx.records.get(self._id) else JobState.UNKNOWN
        state = state_of(meta)
        if state is JobState.FAILED and isinstance(self.error(meta), errdefs.Canceled):
            return JobState.CANCELED
        return state

    @property
    def reason(self) -> str | None:
        """Why the job is retrying, or the message of its failure."""
        meta = self._meta()
        if meta is None or meta.get("status") not in ("RETRY", "FAILURE", "REVOKED"):
            return None
        return str(self.error(meta))

    @property
    def progress(self) -> Progress | None:
        """Offset/total of the live write (status board), the size once succeeded.
        InvalidArgument naming the job for a malformed result."""
        meta = self._meta()
        if meta is not None and meta.get("status") == "SUCCESS":
            info = self._info(meta)
            if isinstance(info, errdefs.ErrdefsError):
                raise info
            return Progress(info.size, info.size)
        if not self.ref:
            return None
        active = self._ctx.board.get(self.ref)
        return Progress(active.offset, active.total) if active is not None else None

    @property
    def source(self) -> str:
        """What the job reads from (empty if unknown)."""
        return self._ctx.records.get(self._id).get("source", "")

    @property
    def retry(self) -> RetryInfo | None:
        """The retry fields the worker recorded while the job is retrying a failed
        attempt (Celery shows RETRY), else None."""
        meta = self._meta()
        if meta is None or meta.get("status") != "RETRY":
            return None
        return RetryInfo.from_record(self._ctx.records.get(self._id), self.reason)

    def error(self, meta: Mapping[str, Any]) -> errdefs.ErrdefsError:
        """The job's error as ``meta`` (failed, revoked or retrying) describes it.
        InvalidArgument naming the job when its error record is malformed."""
        record_error = None
        if meta.get("status") == "FAILURE":
            record_error = self._ctx.records.get(self._id).get("error")
        return error_from_meta(self._id, meta, record_error)

    def _info(self, meta: Mapping[str, Any]) -> Info | errdefs.ErrdefsError:
        """The Info a SUCCESS meta carries, or InvalidArgument naming the job."""
        result = meta.get("result")
        if not isinstance(result, Mapping):
            return errdefs.InvalidArgument(f"job {self._id}: malformed result: not an object")
        try:
            return info_from_json(result)
        except errdefs.InvalidArgument as e:
            return errdefs.wrap(e, f"job {self._id}: malformed result")

    def outcome(self) -> Info | errdefs.ErrdefsError | None:
        """The Info or the error when done, None while running. InvalidArgument naming
        the job (raised when the meta cannot be read at all) for a malformed result."""
        meta = self._meta()
        if meta is None:
            return None
        status = meta.get("status")
        if status == "SUCCESS":
            return self._info(meta)
        if status in ("FAILURE", "REVOKED"):
            return self.error(meta)
        return None

    def wait(self, timeout: float | None = None) -> Info:
        """Block until done; the Info, or the job's errdefs error (DeadlineExceeded
        after ``timeout`` seconds, NotFound for an unknown job)."""
        if not watched(timeout):
            return poll_outcome(self._id, self.outcome, self._known, Info, timeout,
                                max_delay=MAX_POLL)  # fmt: skip
        with self._ctx.results.watch(self._id) as watch:
            return poll_outcome(self._id, self.outcome, self._known, Info, timeout,
                                max_delay=WATCHED_POLL, sleep=watch.sleep)  # fmt: skip

    def cancel(self) -> None:
        """Flag the job for cancellation and revoke its message. Unavailable when
        Redis cannot be reached."""
        self._ctx.revoke([self._id])


def _fields(
    request: IngestRequest, retries: int | None
) -> tuple[dict[str, str], dict[str, object]]:
    """The job record's fields and the task's keyword arguments of ``request``."""
    fields = {
        "kind": KIND_INGEST,
        "ref": request.ref,
        "source": source_name(request.source),
        "request": json.dumps(request.to_json()),
    }
    kwargs: dict[str, object] = {}
    if retries is not None:
        fields["max_retries"] = str(retries)
        kwargs["max_source_retries"] = retries
    return fields, kwargs


def submit_ingest(
    ctx: QueueContext,
    request: IngestRequest,
    job_id: str | None = None,
    idempotency_key: str | None = None,
    retries: int | None = None,
) -> QueueIngestJob:
    """Record and publish ``request`` (once per job id / idempotency key); ``retries``
    bounds its source retries (the task's ``max_source_retries`` argument). Unavailable
    when Redis cannot be reached (nothing is left recorded then); InvalidArgument for a
    negative ``retries``."""
    if retries is not None and retries < 0:
        raise errdefs.InvalidArgument(f"retries must be at least 0, got {retries}")
    fields, kwargs = _fields(request, retries)
    job_id, published = ctx.publish(
        TASK_INGEST, [request.to_json()], new_job_id(job_id, idempotency_key), fields,
        idempotency_key, QUEUE, kwargs,
    )  # fmt: skip
    return QueueIngestJob(ctx, job_id, request.ref if published else None)


def submit_ingests(
    ctx: QueueContext,
    requests: Sequence[IngestRequest],
    retries: int | None = None,
    batch_jobs: int = BATCH_JOBS,
) -> list[QueueIngestJob]:
    """Record and publish every request of ``requests`` as a new job (a fresh id each):
    the records in one Redis pipeline, the messages through one producer connection
    (:meth:`QueueContext.publish_many`). Jobs that may run in a batch
    (:func:`ingestq.tasks.batching.batchable`) share messages of up to ``batch_jobs``
    (at most :data:`~ingestq.tasks.batching.BATCH_JOBS`; 0 or 1: none) jobs; each job
    keeps its own id, record and result. Their handles, in order. Unavailable when
    Redis cannot be reached; InvalidArgument for a negative ``retries``."""
    if retries is not None and retries < 0:
        raise errdefs.InvalidArgument(f"retries must be at least 0, got {retries}")
    records: list[tuple[str, dict[str, str]]] = []
    messages: list[Message] = []
    batch: list[BatchEntry] = []
    for request in requests:
        fields, kwargs = _fields(request, retries)
        job_id = new_job_id(None, None)
        records.append((job_id, fields))
        if batch_jobs > 1 and batchable(request):
            batch.append(BatchEntry(job_id, request.to_json(), retries))
            if len(batch) >= min(batch_jobs, BATCH_JOBS):
                messages.append(_batch_message(batch))
                batch = []
        else:
            messages.append(Message(TASK_INGEST, job_id, [request.to_json()], kwargs, (job_id,)))
    if batch:
        messages.append(_batch_message(batch))
    ctx.publish_many(records, messages, QUEUE)
    return [
        QueueIngestJob(ctx, job_id, r.ref) for (job_id, _), r in zip(records, requests, strict=True)
    ]


def _batch_message(batch: list[BatchEntry]) -> Message:
    """The message of ``batch``: an ``ingestq.ingest`` of its own for a single job."""
    ids = tuple(e.job_id for e in batch)
    if len(batch) == 1:
        return Message(TASK_INGEST, ids[0], [dict(batch[0].request)], batch[0].task_kwargs(), ids)
    jobs = [e.to_json() for e in batch]
    return Message(TASK_INGEST_BATCH, new_job_id(None, None), [], {"jobs": jobs}, ids)


__all__ = ["QueueIngestJob", "submit_ingest", "submit_ingests"]
