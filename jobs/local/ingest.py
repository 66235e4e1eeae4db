"""In-process ingest jobs: the ingest core in a thread of this process, and the handle
on such a job (the :class:`ingestq.jobs.api.IngestJob` protocol).

The same ingest core as on workers (:func:`ingestq.ingest.wait.ingest`), with the
store's file locks only: several ``ingestq`` processes on one host coordinate through
the store (a locked ref waits with backoff, then finds the digest committed and fetches
nothing). An Unavailable source is retried per ``Settings.source_retry``
(:class:`ingestq.jobs.retry.RetryPolicy`), the job showing ``retrying`` with the reason.

The job's record (:mod:`ingestq.jobs.local.context`) lets other processes on the host
see its state (``ingestq job status``), its progress (from the ingest directory) and
cancel it (``ingestq job cancel``).

Imports errdefs, store, fetch (sources from specs), ingest (the core) and this package.
"""

from __future__ import annotations

import json
import time

from ingestq import errdefs
from ingestq.fetch.specs import source_from_spec, source_name
from ingestq.ingest.hooks import CombinedHooks
from ingestq.ingest.outcome import IngestResult
from ingestq.ingest.request import IngestRequest
from ingestq.ingest.wait import ingest
from ingestq.jobs.api import JobState, Progress, RetryInfo
from ingestq.jobs.cancel import CancelHooks
from ingestq.jobs.local.context import LocalContext, RecordedJob, state_of
from ingestq.jobs.local.progress import RecordProgress
from ingestq.jobs.records import KIND_INGEST, json_field
from ingestq.store.codec import info_from_json, info_to_json
from ingestq.store.values import Info


class LocalIngestJob(RecordedJob):
    """An in-process ingest job, readable from any process of the host that opens the
    same store root."""

    @property
    def ref(self) -> str:
        """The ingest ref the job writes (empty if unknown)."""
        return self._record().get("ref", "")

    @property
    def progress(self) -> Progress | None:
        """Offset/total of the live write, the full size once succeeded, else None."""
        rec = self._record()
        if not rec:
            return None
        result = json_field(rec, "result")
        if state_of(rec) is JobState.SUCCEEDED and isinstance(result, dict):
            size = int(result.get("size", 0))
            return Progress(size, size)
        try:
            st = self._ctx.store.status(rec.get("ref", ""))
        except errdefs.ErrdefsError:
            return None
        try:
            announced = int(rec.get("total") or 0)
        except ValueError:
            announced = 0
        return Progress(st.offset, st.total or announced)

    @property
    def source(self) -> str:
        """What the job reads from (empty if unknown)."""
        return self._record().get("source", "")

    @property
    def retry(self) -> RetryInfo | None:
        """The job's retry fields while it is retrying, else None."""
        rec = self._record()
        if state_of(rec) is not JobState.RETRYING:
            return None
        return RetryInfo.from_record(rec, rec.get("reason"))

    def wait(self, timeout: float | None = None) -> Info:
        """Block until done; the Info, or the job's errdefs error (DeadlineExceeded
        after ``timeout`` seconds, NotFound for an unknown job)."""
        return self._wait(timeout, info_from_json, Info)


def submit_ingest(
    ctx: LocalContext,
    request: IngestRequest,
    job_id: str | None = None,
    idempotency_key: str | None = None,
    retries: int | None = None,
) -> LocalIngestJob:
    """Start ``request`` in a thread of this process (or find the existing job of the
    same id / idempotency key); ``retries`` bounds its source retries (default: the
    settings'). InvalidArgument for a negative ``retries``."""
    if retries is not None and retries < 0:
        raise errdefs.InvalidArgument(f"retries must be at least 0, got {retries}")
    fields = {"kind": KIND_INGEST, "ref": request.ref, "source": source_name(request.source),
              "request": json.dumps(request.to_json())}  # fmt: skip
    if retries is not None:
        fields["max_retries"] = str(retries)

    def body(job_id: str, hooks: CancelHooks) -> dict[str, str]:
        return _run(ctx, job_id, request, hooks, retries)

    return LocalIngestJob(ctx, ctx.submit(job_id, idempotency_key, fields, body, "ingest"))


def _run(
    ctx: LocalContext,
    job_id: str,
    request: IngestRequest,
    hooks: CancelHooks,
    retries: int | None = None,
) -> dict[str, str]:
    policy = ctx.settings.source_retry.with_retries(retries)
    failed = 0

    def lock_wait(err: BaseException) -> None:
        ctx.update(job_id, state=JobState.RETRYING.value, reason=str(err))

    def retrying(err: BaseException, delay: float) -> None:
        nonlocal failed
        failed += 1
        most = "" if policy.max_attempts is None else str(policy.max_attempts)
        ctx.update(job_id, state=JobState.RETRYING.value, reason=str(err),
                   attempt=str(failed), max_attempts=most,
                   next_at=f"{time.time() + delay:.3f}")  # fmt: skip

    def attempt() -> IngestResult:
        if failed:
            ctx.update(job_id, state=JobState.STARTED.value)
        return ingest(
            ctx.store, source, request, hooks=combined,
            on_wait=lambda busy, _delay: lock_wait(busy.error),
        )  # fmt: skip

    source = source_from_spec(request.source, ctx.settings.fetch_options())
    combined = CombinedHooks(hooks, RecordProgress(ctx, job_id))
    result = policy.run(attempt, wait=hooks.wait, what=f"job {job_id}", on_retry=retrying)
    return {"result": json.dumps({**info_to_json(result.info), "fetched": result.fetched})}


__all__ = ["LocalIngestJob", "submit_ingest"]
