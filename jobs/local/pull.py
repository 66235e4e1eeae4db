"""In-process pull jobs: the whole pull in a thread of this process, children in a
thread pool, and the handle on such a pull (the :class:`ingestq.jobs.api.PullJob`
protocol).

The record (:mod:`ingestq.jobs.local.context`) has ``kind: pull``, the request and,
once planned, the plan, so ``ingestq job status|wait|cancel`` and :class:`LocalPullJob`
work from any process of the host that opens the same store root. Cancellation: the
job's event in this process, or its cancel flag from another one; children stop at
their next chunk (ingests are kept for resume). Each child retries an Unavailable
source per ``Settings.source_retry``. The first failing child stops the others and
fails the pull with its kind (``pull <name>: <ref>: ...``).

Imports errdefs, store, fetch, ingest, images (planning, finalize, pull values) and
this package.
"""

from __future__ import annotations

import json
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from ingestq import errdefs
from ingestq.images.finalize import finalize
from ingestq.images.plan import PlannedBlob, PullPlan, plan_pull
from ingestq.images.request import ImageSource, PullRequest, open_image
from ingestq.images.status import BlobState, BlobStatus, ChildResult, PullResult
from ingestq.ingest.outcome import IngestResult
from ingestq.ingest.wait import ingest
from ingestq.jobs.api import JobState
from ingestq.jobs.cancel import CancelHooks
from ingestq.jobs.local.context import LocalContext, RecordedJob, state_of
from ingestq.jobs.pull import child_error
from ingestq.jobs.pullstatus import PullStatus
from ingestq.jobs.records import KIND_PULL, json_field
from ingestq.jobs.retry import RetryPolicy
from ingestq.store.gc import JobLease
from ingestq.store.local import LocalStore
from ingestq.store.locks import lock_domains

if TYPE_CHECKING:
    from ingestq.s3 import S3Store


class LocalPullJob(RecordedJob):
    """An in-process pull, readable from any process of the host that opens the same
    store root."""

    def status(self) -> PullStatus:
        """The pull's state and every blob's, from the plan and the store."""
        rec = self._record()
        if not rec:
            return PullStatus(self._id, JobState.UNKNOWN, "")
        plan_json = json_field(rec, "plan")
        plan = PullPlan.from_json(plan_json) if plan_json else None
        blobs: tuple[BlobStatus, ...] = ()
        if plan is not None:
            store = self._ctx.store
            blobs = tuple(_blob_status(store, b) for b in (*plan.manifests, *plan.children))
        return PullStatus(
            self._id,
            state_of(rec),
            rec.get("source", ""),
            plan.name if plan else None,
            self.reason,
            plan.target if plan else None,
            blobs,
        )

    def wait(self, timeout: float | None = None) -> PullResult:
        """Block until done; the result, or the pull's errdefs error (DeadlineExceeded
        after ``timeout`` seconds, NotFound for an unknown job)."""
        return self._wait(timeout, PullResult.from_json, PullResult)


def _blob_status(store: LocalStore | S3Store, blob: PlannedBlob) -> BlobStatus:
    d = blob.desc
    if blob.committed(store):
        return BlobStatus(blob.ref, d.digest, d.media_type, d.size, BlobState.DONE, d.size)
    try:
        st = store.status(blob.ref)
    except errdefs.NotFound:
        return BlobStatus(blob.ref, d.digest, d.media_type, d.size, BlobState.WAITING)
    state = BlobState.DOWNLOADING if st.holder is not None else BlobState.WAITING
    return BlobStatus(blob.ref, d.digest, d.media_type, d.size, state, st.offset)


def submit_pull(
    ctx: LocalContext,
    request: PullRequest,
    job_id: str | None = None,
    idempotency_key: str | None = None,
    retries: int | None = None,
) -> LocalPullJob:
    """Start ``request`` in a thread of this process (or find the existing job of the
    same id / idempotency key); ``retries`` bounds each blob's source retries (default:
    the settings'). InvalidArgument for a negative ``retries``."""
    policy = ctx.settings.source_retry.with_retries(retries)
    fields = {"kind": KIND_PULL, "ref": "", "source": request.reference,
              "request": json.dumps(request.to_json())}  # fmt: skip
    if retries is not None:
        fields["max_retries"] = str(retries)

    def body(job_id: str, hooks: CancelHooks) -> dict[str, str]:
        result = _Pull(ctx, job_id, request, hooks, policy).run()
        return {"result": json.dumps(result.to_json())}

    return LocalPullJob(ctx, ctx.submit(job_id, idempotency_key, fields, body, "pull"))


class _Pull:
    """One in-process pull, run in its job's thread."""

    def __init__(
        self,
        ctx: LocalContext,
        job_id: str,
        request: PullRequest,
        hooks: CancelHooks,
        policy: RetryPolicy,
    ) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.request = request
        self.hooks = hooks
        self.policy = policy

    def _ingest(self, image: ImageSource, blob: PlannedBlob) -> IngestResult:
        """One blob: the ingest core (waits while the ref is locked), retrying an
        Unavailable source per the job's retry policy; cancel-aware."""
        source = image.blob_source(blob.desc)
        request = blob.request()
        return self.policy.run(
            lambda: ingest(self.ctx.store, source, request, hooks=self.hooks),
            wait=self.hooks.wait,
            what=f"ingest {request.ref}",
        )

    def run(self) -> PullResult:
        # The lease keeps every blob of the pull from gc until the image is recorded.
        store = self.ctx.store
        lease = JobLease(store.leases(), f"pull-{self.job_id}", lock_domains(store.locker))
        try:
            return self._run(lease)
        finally:
            lease.release()

    def _run(self, lease: JobLease) -> PullResult:
        image = open_image(self.request, self.ctx.settings.fetch_options())
        store = self.ctx.store

        def ingest_manifest(blob: PlannedBlob) -> IngestResult:
            lease.protect(blob.desc.digest)
            return self._ingest(image, blob)

        plan = plan_pull(store, image, self.request, ingest_manifest)
        lease.protect(*(child.desc.digest for child in plan.children))
        self.ctx.update(self.job_id, plan=json.dumps(plan.to_json()), ref=plan.manifests[0].ref,
                        name=plan.name)  # fmt: skip
        results: list[ChildResult] = []
        with ThreadPoolExecutor(
            max_workers=self.request.concurrency, thread_name_prefix=f"pull-{self.job_id}"
        ) as pool:
            futures: dict[Future[IngestResult], PlannedBlob] = {
                pool.submit(self._ingest, image, child): child for child in plan.children
            }
            done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                self.hooks.event.set()  # stop the others at their next chunk
                wait(futures)
                first = failed[0]
                err = first.exception()
                assert err is not None
                raise child_error(plan.name, futures[first], err) from err
            for future, child in futures.items():
                r = future.result()
                results.append(
                    ChildResult(
                        child.ref,
                        child.desc.digest,
                        r.info.size,
                        r.fetched,
                        r.bytes_fetched,
                        r.resumed_from,
                    )
                )
        if self.hooks.cancelled():
            raise errdefs.Canceled(f"pull {plan.name} canceled")
        info, recorded = finalize(store, plan, lease.protect)
        return PullResult(plan.name, plan.target, info, tuple(results), recorded)


__all__ = ["LocalPullJob", "submit_pull"]
