"""The producer side of queued pulls: publish ``ingestq.pull`` and follow it.

The pull's job record (``ingestq:job:<id>``, see :mod:`ingestq.tasks.records`) gets
``kind=pull`` and the request when published; the worker adds the ``plan`` (every blob,
with the child job ids) as soon as the manifests are in. :meth:`QueuePullJob.status`
combines the plan with each child job's state and the status board's live offsets.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from ingestq import errdefs
from ingestq.images.plan import PlannedBlob, PullPlan
from ingestq.images.request import PullRequest
from ingestq.images.status import BlobState, BlobStatus, PullResult
from ingestq.jobs.api import JobState, poll_outcome
from ingestq.jobs.pullstatus import PullStatus
from ingestq.tasks.app import QUEUE
from ingestq.tasks.names import TASK_PULL
from ingestq.tasks.producer import QueueClient, QueueJob

_CHILD_STATES = {
    JobState.SUCCEEDED: BlobState.DONE,
    JobState.FAILED: BlobState.FAILED,
    JobState.CANCELED: BlobState.CANCELED,
    JobState.STARTED: BlobState.DOWNLOADING,
}


def enqueue_queued_pull(
    queue: QueueClient,
    request: PullRequest,
    job_id: str | None = None,
    idempotency_key: str | None = None,
) -> QueuePullJob:
    """Record and publish a pull (once per job id / idempotency key).

    Raises Unavailable when Redis cannot be reached.
    """
    job_id = job_id or str(uuid.uuid4())
    fields = {
        "kind": "pull",
        "ref": "",
        "source": request.reference,
        "request": json.dumps(request.to_json()),
    }
    job_id, created = queue.records.create(job_id, fields, idempotency_key)
    if created:
        try:
            queue.app.send_task(TASK_PULL, args=[request.to_json()], task_id=job_id, queue=QUEUE)
        except Exception as e:
            raise errdefs.Unavailable(f"publish pull {job_id}: {e}") from e
    return QueuePullJob(queue, job_id)


class QueuePullJob:
    """A queued pull (the :class:`tasks.pull.PullJob` protocol)."""

    def __init__(self, queue: QueueClient, job_id: str) -> None:
        self._queue = queue
        self._id = job_id
        self._job = QueueJob(queue, job_id)

    @property
    def id(self) -> str:
        return self._id

    @property
    def state(self) -> JobState:
        return self._job.state

    def plan(self) -> PullPlan | None:
        """The plan the worker recorded, or None before it exists."""
        text = self._queue.records.get(self._id).get("plan")
        return PullPlan.from_json(json.loads(text)) if text else None

    def _child(self, blob: PlannedBlob) -> BlobStatus:
        d = blob.desc
        if not blob.job_id:
            return BlobStatus(blob.ref, d.digest, d.media_type, d.size, BlobState.DONE, d.size)
        child = QueueJob(self._queue, blob.job_id, blob.ref)
        job_state = child.state
        state = _CHILD_STATES.get(job_state, BlobState.WAITING)
        reason = child.reason if job_state in (JobState.RETRYING, JobState.FAILED) else None
        if state is BlobState.DONE:
            return BlobStatus(blob.ref, d.digest, d.media_type, d.size, state, d.size)
        active = self._queue.board.get(blob.ref)
        offset = 0
        if active is not None:
            offset = active.offset
            if state is BlobState.WAITING:
                state = BlobState.DOWNLOADING  # another pull's child is fetching it
        return BlobStatus(blob.ref, d.digest, d.media_type, d.size, state, offset, reason)

    def status(self) -> PullStatus:
        record = self._queue.records.get(self._id)
        state = self._job.state
        reason = self._job.reason
        plan = PullPlan.from_json(json.loads(record["plan"])) if record.get("plan") else None
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
        meta = self._queue.meta(self._id)
        if meta is not None and meta.get("status") == "SUCCESS":
            result: Any = meta.get("result")
            if not isinstance(result, dict):
                return errdefs.Unknown(f"pull {self._id}: malformed result")
            try:
                return PullResult.from_json(result)
            except errdefs.InvalidArgument as e:
                return e
        outcome = self._job.outcome()
        return outcome if isinstance(outcome, errdefs.ErrdefsError) else None

    def wait(self, timeout: float | None = None) -> PullResult:
        return poll_outcome(
            self._id,
            self._outcome,
            lambda: (
                bool(self._queue.records.get(self._id)) or self._queue.meta(self._id) is not None
            ),
            PullResult,
            timeout,
            max_delay=0.1,
        )

    def cancel(self) -> None:
        """Flag the pull and every child for cancellation and revoke their messages."""
        self._queue.records.request_cancel(self._id)
        plan = self.plan()
        ids = [self._id] + [c.job_id for c in (plan.children if plan else ()) if c.job_id]
        for job_id in ids[1:]:
            self._queue.records.request_cancel(job_id)
        try:
            self._queue.app.control.revoke(ids)
        except Exception as e:  # the cancel flags alone still stop the jobs
            raise errdefs.Unavailable(f"revoke {self._id}: {e}") from e


__all__ = ["QueuePullJob", "enqueue_queued_pull"]
