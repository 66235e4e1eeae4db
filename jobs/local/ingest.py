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

from ingestq import errdefs
from ingestq.fetch.specs import source_from_spec, source_name
from ingestq.ingest.request import IngestRequest
from ingestq.ingest.wait import ingest
from ingestq.jobs.api import JobState, Progress
from ingestq.jobs.cancel import CancelHooks
from ingestq.jobs.local.context import LocalContext, RecordedJob, state_of
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
        return Progress(st.offset, st.total)

    def wait(self, timeout: float | None = None) -> Info:
        """Block until done; the Info, or the job's errdefs error (DeadlineExceeded
        after ``timeout`` seconds, NotFound for an unknown job)."""
        return self._wait(timeout, info_from_json, Info)


def submit_ingest(
    ctx: LocalContext,
    request: IngestRequest,
    job_id: str | None = None,
    idempotency_key: str | None = None,
) -> LocalIngestJob:
    """Start ``request`` in a thread of this process (or find the existing job of the
    same id / idempotency key)."""
    fields = {"kind": KIND_INGEST, "ref": request.ref, "source": source_name(request.source),
              "request": json.dumps(request.to_json())}  # fmt: skip

    def body(job_id: str, hooks: CancelHooks) -> dict[str, str]:
        return _run(ctx, job_id, request, hooks)

    return LocalIngestJob(ctx, ctx.submit(job_id, idempotency_key, fields, body, "ingest"))


def _run(
    ctx: LocalContext, job_id: str, request: IngestRequest, hooks: CancelHooks
) -> dict[str, str]:
    def retrying(err: BaseException) -> None:
        ctx.update(job_id, state=JobState.RETRYING.value, reason=str(err))

    source = source_from_spec(request.source, ctx.settings.fetch_options())
    result = ctx.settings.source_retry.run(
        lambda: ingest(
            ctx.store, source, request, hooks=hooks,
            on_wait=lambda busy, _delay: retrying(busy.error),
        ),
        wait=hooks.wait,
        what=f"job {job_id}",
        on_retry=lambda err, _delay: retrying(err),
    )  # fmt: skip
    return {"result": json.dumps({**info_to_json(result.info), "fetched": result.fetched})}


__all__ = ["LocalIngestJob", "submit_ingest"]
