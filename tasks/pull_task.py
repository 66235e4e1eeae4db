"""The Celery side of queued pulls: ``ingestq.pull`` and ``ingestq.pull.finalize``.

``ingestq.pull`` (the job the producer published):

1. plans the pull on this worker (:func:`ingestq.images.plan.plan_pull`): resolve, ingest the
   index and manifests (small; a locked manifest ref is waited for in place, since its
   holder is another pull writing a few KiB);
2. records the plan in the job record, with a child job id per config/layer that is
   not committed yet (ids derived from the pull id and the digest);
3. publishes each child as an ``ingestq.ingest`` job, which any worker takes;
4. *replaces itself* with ``ingestq.pull.finalize`` (Celery's ``Task.replace``: the
   same job id, so the producer keeps following one id) and ends, freeing its slot.

``ingestq.pull.finalize`` checks the children: a child is done when its digest is
committed in the store with its descriptor's size (the truth; also when another pull
fetched it) and its own job is not still running; a failed or canceled child fails the
pull with that child's kind.
While children are pending it publishes itself again with a countdown of 50 ms doubling
to 100 ms for the first 5 s or so (most pulls end then: the image is recorded within
~0.1 s of its last child), then to 500 ms, and 2 s after the first minute of polls (same
job id), and ends with ``Ignore``.
The polls are the fallback: each child's success is counted off the pull's record
(``pending``, set when the children are published) right after its result is stored,
and the child that brings it to zero publishes the finalize at once (``early=True``:
it publishes no poll of its own), so the image is recorded ~10 ms after the last
child instead of up to a poll later. A finalize that finds the pull's outcome already
stored does nothing, and only the finalize that takes the pull's claim
(:meth:`ingestq.tasks.records.RedisJobRecords.claim_finalize`) records the image, so
an early finalize and a poll never record it at once.
It never sleeps or blocks in a worker slot, so with ``worker_prefetch_multiplier=1``
and a single slot the children always get to run: a waiting finalize is an ETA
message, which Celery holds outside the prefetch budget. When every child is done it
labels the blobs, records the image (:func:`ingestq.images.finalize.finalize`) and returns
the :class:`ingestq.images.status.PullResult` JSON, which is the pull job's result. The
poll countdowns follow the one backoff (:class:`ingestq.jobs.retry.RetryPolicy`,
without jitter).

From its first byte to the image record the pull holds a store lease
(:class:`ingestq.store.gc.JobLease`, ``pull-<job id>``): each manifest is added before
it is ingested and every child before it is published, so no gc run (on any host)
removes them; it is dropped when the pull ends, and expires by itself if the pull is lost.

Cancellation: the job record's cancel flag, checked by both tasks; finalize passes it on
to every child. Unavailable (registry down, 429, ...) while planning is retried per
``Settings.source_retry`` like an ingest (at least the registry's Retry-After); every
other error fails the pull with its kind (the error record is also stored in the job
record).

Redelivery (a worker killed mid-pull) re-runs whichever task was unacknowledged: planning
is idempotent (manifests already committed are not fetched again) and re-publishes the
children with the same ids; a child killed mid-download resumes from its stored offset.

Imports celery, errdefs, fetch, ingest, images, the job interface's pull helpers,
records and retry policy, and this package's app, runtime, codec and results.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from celery import Task, signals
from celery.exceptions import Ignore

from ingestq import errdefs
from ingestq.fetch.specs import source_name
from ingestq.images.finalize import finalize
from ingestq.images.plan import PlannedBlob, PullPlan, plan_pull
from ingestq.images.request import PullRequest, open_image
from ingestq.images.status import ChildResult, PullResult
from ingestq.ingest.wait import ingest
from ingestq.jobs.config import Settings
from ingestq.jobs.pull import child_error
from ingestq.jobs.pullstatus import with_child_job_ids
from ingestq.jobs.records import KIND_INGEST, record_error
from ingestq.jobs.retry import RetryPolicy
from ingestq.store.gc import JobLease
from ingestq.store.locks import shared_domains
from ingestq.tasks.app import QUEUE, app
from ingestq.tasks.codec import encode, error_from_meta
from ingestq.tasks.ingest_hooks import worker_hooks
from ingestq.tasks.joblog import EXPECTED_ERRORS
from ingestq.tasks.names import TASK_INGEST, TASK_PULL, TASK_PULL_FINALIZE
from ingestq.tasks.records import PENDING_FIELD
from ingestq.tasks.runtime import Runtime, runtime

log = logging.getLogger(__name__)

#: Finalize poll countdowns (seconds): the first, the cap for the first
#: :data:`POLL_QUICK` polls, the cap up to :data:`POLL_EAGER` polls, and the cap after
#: them (long pulls poll less often).
POLL_FIRST = 0.05
POLL_QUICK_CAP = 0.1
POLL_QUICK = 50
POLL_CAP = 0.5
POLL_EAGER = 150
POLL_SLOW_CAP = 2.0

_QUICK_POLLS = RetryPolicy(first=POLL_FIRST, cap=POLL_QUICK_CAP, jitter=0.0, max_attempts=None)
_EAGER_POLLS = RetryPolicy(first=POLL_FIRST, cap=POLL_CAP, jitter=0.0, max_attempts=None)
_SLOW_POLLS = RetryPolicy(first=POLL_FIRST, cap=POLL_SLOW_CAP, jitter=0.0, max_attempts=None)


#: Seconds a finalize's claim on its pull lasts (a finalize killed meanwhile delays the
#: pull by at most this; recording an image takes far less).
FINALIZE_CLAIM_TTL = 60.0


def poll_countdown(polls: int) -> float:
    """The countdown of finalize poll number ``polls`` (0-based)."""
    if polls < POLL_QUICK:
        return _QUICK_POLLS.backoff(polls)
    return (_EAGER_POLLS if polls < POLL_EAGER else _SLOW_POLLS).backoff(polls)


def _lease_id(pull_id: str) -> str:
    return f"pull-{pull_id}"


def _release_lease(rt: Runtime | None, pull_id: str) -> None:
    """Drop the pull's store lease once it has failed for good (best effort)."""
    if rt is None or not pull_id:
        return
    with contextlib.suppress(errdefs.ErrdefsError):
        JobLease.discard(rt.store.leases(), _lease_id(pull_id))


def _fail(rt: Runtime | None, job_id: str, err: BaseException) -> errdefs.ErrdefsError:
    """Record the failure ``err``; what the task raises for it."""
    clean = encode(err)
    if rt is not None and job_id:
        record_error(rt.records, job_id, clean)
    return clean


def _publish_children(rt: Runtime, pull_id: str, plan: PullPlan, retries: int | None) -> PullPlan:
    """Give every child not yet committed a job id and publish it; committed ones get
    no job (they read as done). A digest committed with another size than the child's
    descriptor is not the child: its job's ingest fails it (or fetches a damaged one)."""
    plan = with_child_job_ids(plan, pull_id)
    children = []
    for child in plan.children:
        if child.committed(rt.store):
            children.append(PlannedBlob(child.desc, child.ref, child.source))
        else:
            children.append(child)
    plan = PullPlan(
        plan.name, plan.target, plan.manifests, tuple(children), plan.labels, plan.source
    )
    pending = sum(1 for child in plan.children if child.job_id)
    rt.records.update(pull_id, {"plan": json.dumps(plan.to_json()), "ref": plan.manifests[0].ref,
                                PENDING_FIELD: str(pending)})  # fmt: skip
    jobs: list[tuple[str, dict[str, Any], dict[str, object], dict[str, str]]] = []
    for child in plan.children:
        if not child.job_id:
            continue
        request = child.request().to_json()
        fields = {
            "kind": KIND_INGEST,
            "ref": child.ref,
            "source": source_name(child.source),
            "request": json.dumps(request),
            "parent": pull_id,
        }
        kwargs: dict[str, object] = {"parent": pull_id}
        if retries is not None:
            fields["max_retries"] = str(retries)
            kwargs["max_source_retries"] = retries
        jobs.append((child.job_id, request, kwargs, fields))
    # The records in one round trip (a redelivered pull finds them made: same ids), then
    # every message through one producer connection.
    rt.records.create_many([(job_id, fields) for job_id, _, _, fields in jobs])
    with app.producer_or_acquire() as producer:
        for job_id, request, kwargs, _ in jobs:
            app.send_task(TASK_INGEST, args=[request], kwargs=kwargs, task_id=job_id, queue=QUEUE,
                          producer=producer)  # fmt: skip
    return plan


@app.task(  # type: ignore[untyped-decorator]
    bind=True,
    name=TASK_PULL,
    max_retries=None,
    acks_late=True,
    reject_on_worker_lost=True,
    throws=EXPECTED_ERRORS,
)
def pull_task(
    self: Task,
    request: dict[str, Any],
    source_retries: int = 0,
    max_source_retries: int | None = None,
) -> dict[str, Any]:
    """Plan a pull, publish its children, and hand over to finalize (module docstring)."""
    pull_id: str = self.request.id or ""
    rt: Runtime | None = None
    try:
        rt = runtime()
        req = PullRequest.from_json(request)
        if rt.records.cancel_requested(pull_id):
            raise errdefs.Canceled(f"pull {pull_id} canceled")
        image = open_image(req, rt.settings.fetch_options())
        store, locker = rt.store, rt.locker
        lease = JobLease(store.leases(), _lease_id(pull_id), shared_domains(store.locker))

        def ingest_manifest(blob: PlannedBlob) -> object:
            lease.protect(blob.desc.digest)
            hooks = worker_hooks(locker, pull_id)
            return ingest(store, image.blob_source(blob.desc), blob.request(), hooks=hooks)

        plan = plan_pull(store, image, req, ingest_manifest)
        if rt.records.cancel_requested(pull_id):
            raise errdefs.Canceled(f"pull {plan.name} canceled")
        lease.protect(*(child.desc.digest for child in plan.children))
        plan = _publish_children(rt, pull_id, plan, max_source_retries)
    except Exception as e:
        settings = rt.settings if rt is not None else Settings()
        policy = settings.source_retry.with_retries(max_source_retries)
        countdown = policy.delay(source_retries, e)
        if countdown is None:
            _release_lease(rt, pull_id)
            raise _fail(rt, pull_id, e) from None
        raise self.retry(
            exc=encode(e),
            countdown=countdown,
            args=[request],
            kwargs={"source_retries": source_retries + 1, "max_source_retries": max_source_retries},
            max_retries=None,
        ) from None
    return self.replace(pull_finalize_task.si(plan.to_json()))  # type: ignore[no-any-return]


def _child_outcome(
    rt: Runtime, plan: PullPlan, child: PlannedBlob
) -> ChildResult | errdefs.ErrdefsError | None:
    """Done (its result), failed (the pull's error), or None while pending."""
    committed = child.committed(rt.store)
    if not child.job_id:
        if committed:
            return ChildResult(child.ref, child.desc.digest, child.desc.size, False)
        return errdefs.FailedPrecondition(f"pull {plan.name}: {child.ref} is not committed")
    meta = rt.results.meta(child.job_id)
    status = meta.get("status") if meta is not None else None
    if status == "SUCCESS" and meta is not None:
        result = meta.get("result")
        if isinstance(result, dict):
            try:
                return ChildResult.from_json(result)
            except errdefs.InvalidArgument:
                pass
        return ChildResult(child.ref, child.desc.digest, child.desc.size, False)
    if committed and status != "STARTED":
        # Fetched by another job (its own job is waiting for the lock, or queued).
        return ChildResult(child.ref, child.desc.digest, child.desc.size, False)
    if status == "FAILURE":
        err = error_from_meta(child.job_id, meta, rt.records.get(child.job_id).get("error"))
        return child_error(plan.name, child, err)
    if status == "REVOKED":
        return errdefs.Canceled(f"pull {plan.name}: {child.ref} canceled")
    return None


def _ended(rt: Runtime, pull_id: str) -> bool:
    """Whether the pull's outcome is stored already (an early finalize, or a poll,
    finished it, or it was revoked): a later finalize of it has nothing to do."""
    try:
        meta = rt.results.meta(pull_id)
    except errdefs.ErrdefsError:
        return False
    return meta is not None and meta.get("status") in ("SUCCESS", "FAILURE", "REVOKED")


def _child_succeeded(sender: Any = None, **_: Any) -> None:
    """A pull's child ingest succeeded, its result stored (``task_success``): count it
    off the pull's record; the last one publishes the pull's finalize at once (``early``)
    instead of leaving the image to the next poll, up to a poll interval later. Best
    effort: the polls go on either way."""
    if getattr(sender, "name", None) != TASK_INGEST or getattr(sender, "app", None) is not app:
        return
    parent = (getattr(sender.request, "kwargs", None) or {}).get("parent")
    if not isinstance(parent, str) or not parent:
        return
    try:
        rt = runtime()
        if rt.records.child_succeeded(parent) != 0:
            return
        plan = rt.records.get(parent).get("plan")
        if plan:
            pull_finalize_task.apply_async(
                args=[json.loads(plan)], kwargs={"early": True}, task_id=parent, queue=QUEUE
            )
    except Exception as e:  # the polls finish the pull anyway
        log.info("pull %s: could not start its finalize early: %s", parent, e)


signals.task_success.connect(_child_succeeded, weak=False)


def _cancel_children(rt: Runtime, plan: PullPlan) -> None:
    for child in plan.children:
        if child.job_id:
            rt.records.request_cancel(child.job_id)


@app.task(  # type: ignore[untyped-decorator]
    bind=True,
    name=TASK_PULL_FINALIZE,
    max_retries=None,
    acks_late=True,
    reject_on_worker_lost=True,
    throws=EXPECTED_ERRORS,
    # The pull wrote STARTED; a STARTED per poll would also cover a stored FAILURE
    # (the result script keeps only a SUCCESS) and hide it from _ended.
    track_started=False,
)
def pull_finalize_task(
    self: Task, plan: dict[str, Any], polls: int = 0, early: bool = False
) -> dict[str, Any]:
    """Wait for the children without holding a slot, then label and record the image.
    ``early``: sent by the pull's last child to succeed (:func:`_child_succeeded`); it
    publishes no poll of its own."""
    pull_id: str = self.request.id or ""
    rt: Runtime | None = None
    try:
        rt = runtime()
        if _ended(rt, pull_id):
            # The other finalize (early or a poll) ended it. A lease a redelivered
            # planning made again goes too.
            _release_lease(rt, pull_id)
            raise Ignore(f"pull {pull_id}: already ended")
        the_plan = PullPlan.from_json(plan)
        if rt.records.cancel_requested(pull_id):
            _cancel_children(rt, the_plan)
            raise errdefs.Canceled(f"pull {the_plan.name} canceled")
        results: list[ChildResult] = []
        pending = False
        for child in the_plan.children:
            outcome = _child_outcome(rt, the_plan, child)
            if isinstance(outcome, errdefs.ErrdefsError):
                _cancel_children(rt, the_plan)
                raise outcome
            if outcome is None:
                pending = True
            else:
                results.append(outcome)
        # Only one finalize of a pull records it: two at once would release each
        # other's lease. The other one's outcome ends the polls.
        if not pending and rt.records.claim_finalize(pull_id, FINALIZE_CLAIM_TTL):
            lease = JobLease(rt.store.leases(), _lease_id(pull_id), shared_domains(rt.store.locker))
            info, recorded = finalize(rt.store, the_plan, lease.protect)
            lease.release()
            result = PullResult(the_plan.name, the_plan.target, info, tuple(results), recorded)
            return result.to_json()
    except Ignore:
        raise
    except Exception as e:
        _release_lease(rt, pull_id)
        raise _fail(rt, pull_id, e) from None
    if early:
        raise Ignore(f"pull {pull_id}: children pending or being recorded, the polls go on")
    countdown = poll_countdown(polls)
    pull_finalize_task.apply_async(
        args=[plan], kwargs={"polls": polls + 1}, task_id=pull_id, countdown=countdown, queue=QUEUE
    )
    raise Ignore(f"pull {pull_id}: children pending, next check in {countdown:.2f}s")


__all__ = [
    "POLL_CAP",
    "POLL_EAGER",
    "POLL_FIRST",
    "POLL_QUICK",
    "POLL_QUICK_CAP",
    "POLL_SLOW_CAP",
    "poll_countdown",
    "pull_finalize_task",
    "pull_task",
]
