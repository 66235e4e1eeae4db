"""The Celery batch task (``ingestq.ingest.batch``): the small local-file jobs that
``enqueue_many`` put in one message (:mod:`ingestq.tasks.batching`), run one after the
other in one pool process.

Each job runs the ingest core as the ingest task runs it
(:mod:`ingestq.tasks.ingest_task`: the same retry policies, metrics, errdefs kinds and
error records) and ends with its own result meta (Celery's, with the job's own name,
args and worker). Per batch, one round trip reads every job's cancel flag before any
file is read, and one writes every outcome
(:meth:`ingestq.tasks.backend.IngestqRedisBackend.store_many`: Celery's meta, expiry,
PUBLISH and SUCCESS guard, per job).

* Cancel: a job whose flag the batch's read found set ends FAILURE(Canceled), its file
  unread. That read counts for a job as the ingest task's own reads do, for
  :data:`~ingestq.tasks.ingest_task.CANCEL_POLL` seconds: a job that starts later reads
  its flag again before its file.
* A job to run again (a busy ref, a retryable error) leaves the batch: its RETRY meta is
  written, and it is published as an ``ingestq.ingest`` message of its own, under its
  own id, with the countdown and counters the ingest task's own retry would give it.
* A job the batch does not run is published as a message of its own: one that is not
  :func:`~ingestq.tasks.batching.batchable`, or that would not take the store's
  small-blob path (over ``INGESTQ_SMALL_BLOB``, an unfinished ingest of its ref, or a
  store that could not tell): that one gets a lease, a heartbeat and a STARTED state
  there. So does a job whose run failed in a way that is not its outcome (a bug), and
  every job of a batch whose worker cannot open its store or Redis (each then ends with
  that error).
* A redelivered batch (its worker was lost, or its outcomes could not be written: the
  message is then requeued after :data:`REQUEUE_PAUSE`) runs nothing itself. Once a
  batch has run to its end it says so in Redis, and a copy redelivered after that does
  nothing. Otherwise each of its jobs with no stored SUCCESS, FAILURE or REVOKED, and
  not recorded as handed on already, is published as a message of its own, where the
  ingest task's redelivery count stops a job that kills its process every time. A job
  may so run twice (a worker lost between a hand-on and its record); its blob commits
  once. A redelivered copy whose worker cannot open its store or Redis is requeued
  instead of handing every job on.
* A malformed message (not a list of at most ``BATCH_JOBS`` entries with distinct ids)
  fails InvalidArgument and runs nothing; each job it names (by a string id, among its
  first :data:`MALFORMED_NAMED_MAX` entries) ends FAILURE with that error, so that no
  job waits on it for ever.
* Celery's own revoke (``celery control revoke ID``, Flower) names messages: it does
  not reach a job inside a batch. ``ingestq job cancel`` and ``job.cancel()`` do (the
  job's cancel flag).

Imports celery, errdefs, ingest, the cancel hooks, and this package's app, runtime,
ingest task, batching, job log and names.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from celery import Task
from celery.exceptions import Reject

from ingestq import errdefs
from ingestq.ingest.attempt import takes_small_path
from ingestq.ingest.request import IngestRequest
from ingestq.jobs.cancel import CancelHooks
from ingestq.tasks.app import QUEUE, app
from ingestq.tasks.batching import (
    BATCH_JOBS,
    HANDED_ON_HEADER,
    BatchEntry,
    batchable,
    parse_entries,
)
from ingestq.tasks.ingest_task import (
    CANCEL_POLL,
    Again,
    canceled_error,
    fail_job,
    retry_or_fail,
    run_attempt,
    succeeded,
)
from ingestq.tasks.joblog import EXPECTED_ERRORS, job_fields
from ingestq.tasks.names import TASK_INGEST, TASK_INGEST_BATCH
from ingestq.tasks.runtime import Runtime, runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Ended:
    """A job of the batch ended: its result (the Info JSON, or the errdefs error) and
    Celery state (SUCCESS or FAILURE)."""

    result: Any
    state: str


@dataclass(frozen=True)
class _Leaves:
    """A job of the batch goes on as a message of its own: ``again`` when its attempt
    here ended in a retry, None when the batch did not run it."""

    again: Again | None


#: Seconds a batch waits before requeueing its message when Redis failed it, so that a
#: worker does not spin on a message it cannot finish while Redis is away.
REQUEUE_PAUSE = 1.0


@app.task(  # type: ignore[untyped-decorator]
    bind=True,
    name=TASK_INGEST_BATCH,
    track_started=False,
    ignore_result=True,
    max_retries=0,
    acks_late=True,
    reject_on_worker_lost=True,
    throws=EXPECTED_ERRORS,
)
def ingest_batch_task(self: Task, jobs: list[dict[str, Any]]) -> dict[str, int]:
    """Run the jobs of one batch message (see the module docstring); returns how many
    ended here, and how many left the batch. InvalidArgument for a malformed message."""
    try:
        entries = parse_entries(jobs)
    except errdefs.InvalidArgument as e:
        _fail_named(self, jobs, e)
        raise
    batch_id: str = self.request.id or ""
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    try:
        try:
            rt = runtime()
        except Exception as e:
            if redelivered:  # its first run may have ended or handed on some jobs
                raise
            log.warning("batch %s: %s; every job handed on", batch_id, e)
            _publish(self, [(entry, _Leaves(None)) for entry in entries], None, batch_id)
            return {"ended": 0, "left": len(entries)}
        if redelivered:
            if batch_id and rt.records.batch_done(batch_id):
                return {"ended": 0, "left": 0}
            ids = [e.job_id for e in entries]
            settled = rt.results.ended(ids) | (rt.records.handed(batch_id) if batch_id else set())
            leaving = [(e, _Leaves(None)) for e in entries if e.job_id not in settled]
            _publish(self, leaving, rt, batch_id)
            counts = {"ended": 0, "left": len(leaving)}
        else:
            counts = _counts(_run(self, rt, entries, batch_id))
        if batch_id:
            rt.records.mark_batch_done(batch_id)
        return counts
    except Exception as e:
        # Redis (or the broker) failed the outcomes, the hand-ons or the marks, or the
        # runtime of a redelivered copy: requeue the message; it comes back redelivered
        # and hands every job on that has neither ended nor been handed on.
        log.warning("batch %s: %s; requeued in %.0f s", batch_id, e, REQUEUE_PAUSE)
        time.sleep(REQUEUE_PAUSE)
        raise Reject(str(e), requeue=True) from e


def run_coalesced(jobs: list[dict[str, Any]], hostname: str) -> dict[str, str] | None:
    """In a pool process: run ``jobs`` (:meth:`BatchEntry.to_json` each), small jobs
    that came as ``ingestq.ingest`` messages of their own and that the worker's consumer
    gathered (:mod:`ingestq.tasks.coalesce`), as a batch message's first delivery runs
    its jobs: each ends with its own outcome or leaves as a message of its own. Each
    job's Celery state by id (SUCCESS, FAILURE, RETRY; empty when it left without an
    outcome); None when the batch failed as a whole (no runtime, malformed entries,
    Redis away for the outcomes), and then the consumer requeues every message, each to
    come back redelivered and run on its own. Raises nothing."""
    task: Task = ingest_batch_task
    task.push_request(id=None, hostname=hostname, delivery_info={"routing_key": QUEUE})
    try:
        return _run(task, runtime(), parse_entries(jobs), "")
    except Exception as e:
        log.warning("%d gathered jobs: %s; their messages are requeued", len(jobs), e)
        return None
    finally:
        task.pop_request()


#: At most this many jobs of a malformed batch message get its error as their outcome.
MALFORMED_NAMED_MAX = 4 * BATCH_JOBS


def _fail_named(task: Task, jobs: object, err: errdefs.InvalidArgument) -> None:
    """Give each job a malformed batch message names (a string id, among its first
    :data:`MALFORMED_NAMED_MAX` entries) and that has no outcome yet the message's error
    as its outcome, so that none waits for ever on a message no worker runs (a producer
    of another version, a forged message). Best effort: a failure to record it is
    logged."""
    if not isinstance(jobs, list):
        return
    named = (j.get("id") for j in jobs[:MALFORMED_NAMED_MAX] if isinstance(j, dict))
    ids = list(dict.fromkeys(i for i in named if isinstance(i, str) and i))
    if not ids:
        return
    started = time.monotonic()
    try:
        rt = runtime()
        ended = rt.results.ended(ids)  # an outcome stands: the message is not theirs
        task.backend.store_many(
            [
                (job_id, fail_job(rt, job_id, err, started), "FAILURE", None)
                for job_id in ids
                if job_id not in ended
            ]
        )
    except Exception as e:
        log.warning("batch %s: its jobs' outcome not written: %s", task.request.id, e)


def _run(task: Task, rt: Runtime, entries: list[BatchEntry], batch_id: str) -> dict[str, str]:
    """Run ``entries`` as a batch's first delivery runs them; each job's Celery state
    (SUCCESS, FAILURE, RETRY; empty for one handed on without an outcome), by id."""
    read_at = time.monotonic()
    flags = rt.records.cancel_requested_many([e.job_id for e in entries])
    outcomes: list[tuple[str, Any, str, Any]] = []
    leaving: list[tuple[BatchEntry, _Leaves]] = []
    for entry, flagged in zip(entries, flags, strict=True):
        with job_fields(entry.job_id, TASK_INGEST, entry.request) as fields:
            try:
                done = _run_job(rt, entry, flagged, read_at)
            except Exception as e:  # not the job's outcome: let it run on its own
                log.warning("job %s: %r; handed on", entry.job_id, e)
                done = _Leaves(None)
            if isinstance(done, _Leaves):
                leaving.append((entry, done))
                if done.again is None:
                    continue
                result, state = done.again.error, "RETRY"
                log.info("job %s: %s; retried in its own message", entry.job_id, result)
            elif done.state == "SUCCESS":
                result, state = done.result, done.state
                fields["digest"] = result["digest"]
                log.info("job %s succeeded: %s", entry.job_id, result["digest"])
            else:
                result, state = done.result, done.state
                fields["kind"] = result.name
                log.info("job %s failed: %r", entry.job_id, result)
            outcomes.append((entry.job_id, result, state, _job_request(task, entry)))
    task.backend.store_many(outcomes)
    _publish(task, leaving, rt, batch_id)
    states = dict.fromkeys((entry.job_id for entry, _ in leaving), "")
    states.update((job_id, state) for job_id, _, state, _ in outcomes)
    return states


def _counts(states: dict[str, str]) -> dict[str, int]:
    """How many jobs of a run ended (SUCCESS or FAILURE) and how many left the batch."""
    ended = sum(1 for state in states.values() if state in ("SUCCESS", "FAILURE"))
    return {"ended": ended, "left": len(states) - ended}


def _job_request(task: Task, entry: BatchEntry) -> SimpleNamespace:
    """What Celery's extended result meta reads of a task's request, for one job of the
    batch (as if it had run as ``ingestq.ingest`` on this worker)."""
    return SimpleNamespace(task=TASK_INGEST, args=[dict(entry.request)], kwargs=entry.task_kwargs(),
                           hostname=task.request.hostname, retries=0,
                           delivery_info=task.request.delivery_info, children=[],
                           group=None, parent_id=None, stamps=None)  # fmt: skip


def _run_job(rt: Runtime, entry: BatchEntry, flagged: bool, read_at: float) -> _Ended | _Leaves:
    """One job of the batch, as the ingest task's first attempt runs it; ``flagged``:
    its cancel flag as read at ``read_at`` (monotonic seconds)."""
    started = time.monotonic()
    job_id = entry.job_id
    try:
        request = IngestRequest.from_json(entry.request)
    except Exception as e:
        return _Ended(fail_job(rt, job_id, e, started), "FAILURE")
    if flagged:
        return _Ended(fail_job(rt, job_id, canceled_error(job_id), started), "FAILURE")
    try:
        small = batchable(request) and takes_small_path(rt.store, request)
    except errdefs.ErrdefsError:  # the store could not tell (S3 throttled, Redis away)
        small = False
    if not small:
        return _Leaves(None)
    cancel = CancelHooks(rt.records, job_id, poll=CANCEL_POLL)
    cancel.read_elsewhere(at=read_at)  # within a poll of the batch's read, it stands
    try:
        result = run_attempt(rt, job_id, request, cancel)
    except Exception as e:
        try:
            again = retry_or_fail(rt, job_id, e, 0, 0, entry.max_source_retries, started)
        except errdefs.ErrdefsError as failed:
            return _Ended(failed, "FAILURE")
        return _Leaves(again)
    return _Ended(succeeded(request, result, started), "SUCCESS")


def _publish(
    task: Task, leaving: list[tuple[BatchEntry, _Leaves]], rt: Runtime | None, batch_id: str
) -> None:
    """Publish each job of ``leaving`` as an ``ingestq.ingest`` message of its own, and
    (with ``rt``) record those sent as handed on by batch ``batch_id``, also when a
    later one fails to go out."""
    if not leaving:
        return
    sent: list[str] = []
    try:
        with task.app.producer_or_acquire() as producer:
            for entry, leaves in leaving:
                kwargs = entry.task_kwargs()
                countdown = None
                if leaves.again is not None:
                    kwargs.update(lock_waits=leaves.again.lock_waits,
                                  source_retries=leaves.again.source_retries)  # fmt: skip
                    countdown = leaves.again.countdown
                task.app.send_task(TASK_INGEST, args=[dict(entry.request)], kwargs=kwargs,
                                   task_id=entry.job_id, queue=QUEUE, countdown=countdown,
                                   producer=producer,
                                   headers={HANDED_ON_HEADER: batch_id or "gathered"})  # fmt: skip
                sent.append(entry.job_id)
    finally:
        if rt is not None and batch_id and sent:
            try:
                rt.records.mark_handed(batch_id, sent)
            except errdefs.Unavailable as e:  # a redelivered copy may send them again
                log.warning("batch %s: hand-ons not recorded: %s", batch_id, e)


__all__ = ["MALFORMED_NAMED_MAX", "REQUEUE_PAUSE", "ingest_batch_task", "run_coalesced"]
