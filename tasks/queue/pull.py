"""Queued pulls: publishing ``ingestq.pull``, and the producer's handle on it (the
:class:`ingestq.jobs.api.PullJob` protocol): status, wait and **cancel a queued pull**
(flag the pull and every child, revoke their messages).

The pull's job record (``ingestq:job:<id>``, see :mod:`ingestq.tasks.records`) gets
``kind=pull`` and the request when published; the worker adds the ``plan`` (every blob,
with the child job ids) as soon as the manifests are in. :meth:`QueuePullJob.status`
combines the plan with each child job's state and the status board's live offsets.

Imports errdefs, images (the pull values), the job interface and this package's Redis
adapters and queued ingest handle.
"""

from __future__ import annotations

import json
from typing import Any

from ingestq import errdefs
from ingestq.images.plan import PlannedBlob, PullPlan
from ingestq.images.request import PullRequest
from ingestq.images.status import BlobState, BlobStatus, PullResult
from ingestq.jobs.api import JobState, new_job_id
from ingestq.jobs.pullstatus import PullStatus
from ingestq.jobs.records import KIND_PULL, load_json
from ingestq.jobs.wait import poll_outcome
from ingestq.tasks.app import QUEUE
from ingestq.tasks.names import TASK_PULL
from ingestq.tasks.queue.context import QueueContext
from ingestq.tasks.queue.ingest import WATCHED_POLL, QueueIngestJob, watched

#: The longest pause between two reads of the result while waiting for a pull.
MAX_POLL = 0.1

_CHILD_STATES = {
    JobState.SUCCEEDED: BlobState.DONE,
    JobState.FAILED: BlobState.FAILED,
    JobState.CANCELED: BlobState.CANCELED,
    JobState.STARTED: BlobState.DOWNLOADING,
}


class QueuePullJob:
    """A pull on the Redis queue."""

    def __init__(self, ctx: QueueContext, job_id: str) -> None:
        self._ctx = ctx
        self._id = job_id
        self._job = QueueIngestJob(ctx, job_id)

    @property
    def id(self) -> str:
        """The job id."""
        return self._id

    @property
    def state(self) -> JobState:
        """The pull's state (a fresh read); Unavailable when Redis is down."""
        return self._job.state

    def _plan(self, record: dict[str, str]) -> PullPlan | None:
        """The plan in ``record``, None before it exists; InvalidArgument naming the job
        when it is malformed."""
        if not record.get("plan"):
            return None
        what = f"job {self._id}: malformed pull plan"
        plan = load_json(record["plan"], what)
        if not isinstance(plan, dict):
            raise errdefs.InvalidArgument(f"{what}: not an object")
        try:
            return PullPlan.from_json(plan)
        except errdefs.InvalidArgument as e:
            raise errdefs.wrap(e, f"job {self._id}") from None

    def plan(self) -> PullPlan | None:
        """The plan the worker recorded, or None before it exists. InvalidArgument
        naming the job when it is malformed."""
        return self._plan(self._ctx.records.get(self._id))

    def _child(self, blob: PlannedBlob) -> BlobStatus:
        d = blob.desc
        if not blob.job_id:
            return BlobStatus(blob.ref, d.digest, d.media_type, d.size, BlobState.DONE, d.size)
        child = QueueIngestJob(self._ctx, blob.job_id, blob.ref)
        job_state = child.state
        state = _CHILD_STATES.get(job_state, BlobState.WAITING)
        reason = child.reason if job_state in (JobState.RETRYING, JobState.FAILED) else None
        if state is BlobState.DONE:
            return BlobStatus(blob.ref, d.digest, d.media_type, d.size, state, d.size)
        active = self._ctx.board.get(blob.ref)
        offset = 0
        if active is not None:
            offset = active.offset
            if state is BlobState.WAITING:
                state = BlobState.DOWNLOADING  # another pull's child is fetching it
        return BlobStatus(blob.ref, d.digest, d.media_type, d.size, state, offset, reason)

    def status(self) -> PullStatus:
        """The pull's state and every blob's (plan, child jobs, status board)."""
        record = self._ctx.records.get(self._id)
        state = self._job.state
        reason = self._job.reason
        plan = self._plan(record)
        if plan is None:
            return PullStatus(self._id, state, record.get("source", ""), reason=reason)
        blobs = [
            BlobStatus(b.ref, b.desc.digest, b.desc.media_type, b.desc.size, BlobState.DONE,
                       b.desc.size)
            for b in plan.manifests
        ]  # fmt: skip
        blobs.extend(self._child(b) for b in plan.children)
        return PullStatus(
            self._id,
            state,
            record.get("source", ""),
            plan.name,
            reason,
            plan.target,
            tuple(blobs),
        )

    def _outcome(self) -> PullResult | errdefs.ErrdefsError | None:
        meta = self._ctx.results.meta(self._id)
        if meta is not None and meta.get("status") == "SUCCESS":
            result: Any = meta.get("result")
            if not isinstance(result, dict):
                return errdefs.InvalidArgument(f"job {self._id}: malformed result")
            try:
                return PullResult.from_json(result)
            except errdefs.InvalidArgument as e:
                return errdefs.wrap(e, f"job {self._id}: malformed result")
        if meta is not None and meta.get("status") in ("FAILURE", "REVOKED"):
            return self._job.error(meta)
        return None

    def wait(self, timeout: float | None = None) -> PullResult:
        """Block until done; the result, or the pull's errdefs error (DeadlineExceeded
        after ``timeout`` seconds, NotFound for an unknown job)."""

        def known() -> bool:
            ctx = self._ctx
            return bool(ctx.records.get(self._id)) or ctx.results.meta(self._id) is not None

        if not watched(timeout):
            return poll_outcome(self._id, self._outcome, known, PullResult, timeout,
                                max_delay=MAX_POLL)  # fmt: skip
        with self._ctx.results.watch(self._id) as watch:
            return poll_outcome(self._id, self._outcome, known, PullResult, timeout,
                                max_delay=WATCHED_POLL, sleep=watch.sleep)  # fmt: skip

    def cancel(self) -> None:
        """Cancel a queued pull: flag the pull and every child job for cancellation and
        revoke their messages (children stop at their next chunk, ingests are kept for
        resume). Unavailable when Redis cannot be reached."""
        self._ctx.records.request_cancel(self._id)  # first, so a plan written later sees it
        try:
            plan = self.plan()
        except errdefs.InvalidArgument:
            plan = None  # a tampered plan names no children to trust: cancel the pull alone
        children = [c.job_id for c in (plan.children if plan else ()) if c.job_id]
        self._ctx.revoke([self._id, *children])


def submit_pull(
    ctx: QueueContext,
    request: PullRequest,
    job_id: str | None = None,
    idempotency_key: str | None = None,
    retries: int | None = None,
) -> QueuePullJob:
    """Record and publish the pull ``request`` (once per job id / idempotency key);
    ``retries`` bounds the source retries of its planning and of each child (the task's
    ``max_source_retries``). Unavailable when Redis cannot be reached; InvalidArgument
    for a negative ``retries``."""
    if retries is not None and retries < 0:
        raise errdefs.InvalidArgument(f"retries must be at least 0, got {retries}")
    fields = {
        "kind": KIND_PULL,
        "ref": "",
        "source": request.reference,
        "request": json.dumps(request.to_json()),
    }
    kwargs: dict[str, object] = {}
    if retries is not None:
        fields["max_retries"] = str(retries)
        kwargs["max_source_retries"] = retries
    job_id, _ = ctx.publish(
        TASK_PULL, [request.to_json()], new_job_id(job_id, idempotency_key), fields,
        idempotency_key, QUEUE, kwargs,
    )  # fmt: skip
    return QueuePullJob(ctx, job_id)


__all__ = ["QueuePullJob", "submit_pull"]
