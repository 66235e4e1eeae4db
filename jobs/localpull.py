"""Embedded pulls: the whole pull in a thread of this process, children in a thread pool.

What the embedded default (no Redis) runs for :func:`tasks.pull.enqueue_pull`. The job
record is ``<root>/jobs/<id>.json`` in the format of :mod:`ingestq.jobs.local` (state, ref,
reason, result or error record, pid, host) plus ``kind: pull``, the request and the
plan, so ``ingestq job status|wait|cancel`` and :class:`LocalPullJob` work from any
process of the host that opens the same store root. Cancellation: an event in this
process, or the job's ``.cancel`` file from another one; children stop at their next
chunk (ingests are kept for resume). The first failing child stops the others and fails
the pull with its kind (``pull <name>: <ref>: ...``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from ingestq import errdefs
from ingestq.fetch.source import Source
from ingestq.images.finalize import finalize
from ingestq.images.plan import PlannedBlob, PullPlan, plan_pull
from ingestq.images.request import ImageSource, PullRequest, open_image
from ingestq.images.status import BlobState, BlobStatus, ChildResult, PullResult
from ingestq.ingest.outcome import IngestResult
from ingestq.ingest.request import IngestRequest
from ingestq.ingest.wait import ingest
from ingestq.jobs.api import JobState
from ingestq.jobs.config import Settings
from ingestq.jobs.local import CancelHooks
from ingestq.jobs.pull import child_error
from ingestq.jobs.pullstatus import PullStatus
from ingestq.jobs.retry import backoff
from ingestq.store.local import LocalStore


def _write_json(path: Path, obj: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _cancel_path(record: Path) -> Path:
    return record.with_name(record.stem + ".cancel")


def ingest_with_retries(
    store: LocalStore,
    source: Source,
    request: IngestRequest,
    settings: Settings,
    hooks: CancelHooks,
    *,
    job_id: str = "",
) -> IngestResult:
    """The embedded ingest of one blob: :func:`tasks.ingest.ingest` (waits while the ref
    is locked), retrying Unavailable up to ``settings.max_source_retries`` times with
    backoff (at least the source's Retry-After). Cancel-aware."""
    attempt = 0
    while True:
        try:
            return ingest(store, source, request, hooks=hooks)
        except errdefs.Unavailable as e:
            if attempt >= settings.max_source_retries:
                raise
            delay = backoff(attempt, 1.0, settings.retry_cap)
            after = e.details.get("retry_after")
            if after is not None:
                with contextlib.suppress(ValueError):
                    delay = max(delay, min(float(after), settings.retry_cap))
            attempt += 1
            if hooks.event.wait(delay) or hooks.cancelled():
                raise errdefs.Canceled(f"ingest {request.ref} canceled") from e


class _LocalPull:
    """One embedded pull, run in its own thread (see :func:`start_local_pull`)."""

    def __init__(
        self, store: LocalStore, settings: Settings, path: Path, request: PullRequest
    ) -> None:
        self.store = store
        self.settings = settings
        self.path = path
        self.request = request
        self.record: dict[str, Any] = json.loads(path.read_text())
        self.hooks = CancelHooks(threading.Event(), _cancel_path(path))

    def _update(self, **fields: Any) -> None:
        self.record.update(fields, updated_at=time.time())
        _write_json(self.path, self.record)

    def run(self) -> None:
        self._update(state=JobState.STARTED.value)
        try:
            result = self._pull()
        except BaseException as e:
            err = errdefs.from_exception(e)
            state = JobState.CANCELED if isinstance(err, errdefs.Canceled) else JobState.FAILED
            self._update(state=state.value, reason=str(err), error=errdefs.to_json_dict(err))
            if not isinstance(e, Exception):
                raise
            return
        self._update(state=JobState.SUCCEEDED.value, reason=None, result=result.to_json())

    def _ingest(self, image: ImageSource, blob: PlannedBlob) -> IngestResult:
        return ingest_with_retries(
            self.store,
            image.blob_source(blob.desc),
            blob.request(),
            self.settings,
            self.hooks,
            job_id=self.record["id"],
        )

    def _pull(self) -> PullResult:
        image = open_image(self.request, self.settings.fetch_options().file_roots)
        plan = plan_pull(self.store, image, self.request, lambda b: self._ingest(image, b))
        root_ref = plan.manifests[0].ref
        self._update(plan=plan.to_json(), ref=root_ref, name=plan.name)
        results: list[ChildResult] = []
        with ThreadPoolExecutor(
            max_workers=self.request.concurrency, thread_name_prefix=f"pull-{self.record['id']}"
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
        info, recorded = finalize(self.store, plan)
        return PullResult(plan.name, plan.target, info, tuple(results), recorded)


def start_local_pull(client: Any, request: PullRequest, job_id: str | None = None) -> LocalPullJob:
    """Start ``request`` in a thread of this process on ``client``
    (:class:`tasks.embedded.LocalClient`). An existing job of the same id is returned
    as it is (nothing new starts)."""
    job_id = job_id or str(uuid.uuid4())
    path: Path = client.job_path(job_id)
    record = {
        "id": job_id,
        "kind": "pull",
        "ref": "",
        "source": request.reference,
        "request": request.to_json(),
        "state": JobState.QUEUED.value,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "created_at": time.time(),
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return LocalPullJob(client, job_id)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    runner = _LocalPull(client.store, client.settings, path, request)
    thread = threading.Thread(target=runner.run, name=f"pull-{job_id}")
    job = LocalPullJob(client, job_id, thread, runner.hooks.event)
    thread.start()
    return job


def _blob_status_local(store: LocalStore, blob: PlannedBlob) -> BlobStatus:
    d = blob.desc
    if store.exists(d.digest):
        return BlobStatus(blob.ref, d.digest, d.media_type, d.size, BlobState.DONE, d.size)
    try:
        st = store.status(blob.ref)
    except errdefs.NotFound:
        return BlobStatus(blob.ref, d.digest, d.media_type, d.size, BlobState.WAITING)
    state = BlobState.DOWNLOADING if st.holder is not None else BlobState.WAITING
    return BlobStatus(blob.ref, d.digest, d.media_type, d.size, state, st.offset)


class LocalPullJob:
    """A pull of the embedded default (the :class:`PullJob` protocol). Works from any
    process on the host that opens the same store root."""

    def __init__(
        self,
        client: Any,
        job_id: str,
        thread: threading.Thread | None = None,
        event: threading.Event | None = None,
    ) -> None:
        from ingestq.jobs.local import LocalJob

        self._client = client
        self._id = job_id
        self._thread = thread
        self._event = event
        self._job = LocalJob(client, job_id)

    @property
    def id(self) -> str:
        return self._id

    def _record(self) -> dict[str, Any] | None:
        try:
            rec = json.loads(self._client.job_path(self._id).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return rec if isinstance(rec, dict) else None

    @property
    def state(self) -> JobState:
        return self._job.state

    def status(self) -> PullStatus:
        rec = self._record()
        if rec is None:
            return PullStatus(self._id, JobState.UNKNOWN, "")
        state = self._job.state
        plan = PullPlan.from_json(rec["plan"]) if rec.get("plan") else None
        blobs: tuple[BlobStatus, ...] = ()
        if plan is not None:
            store = self._client.store
            blobs = tuple(_blob_status_local(store, b) for b in (*plan.manifests, *plan.children))
        return PullStatus(
            self._id,
            state,
            str(rec.get("source", "")),
            plan.name if plan else None,
            self._job.reason,
            plan.target if plan else None,
            blobs,
        )

    def wait(self, timeout: float | None = None) -> PullResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
        delay = 0.01
        while True:
            rec = self._record()
            if rec is None:
                raise errdefs.NotFound(f"job {self._id}")
            state = self._job.state
            if state is JobState.SUCCEEDED:
                return PullResult.from_json(rec.get("result") or {})
            if state.done:
                self._job.wait(0)  # raises the stored error
                raise errdefs.Unknown(f"job {self._id} {state}")
            if deadline is not None and time.monotonic() + delay > deadline:
                raise errdefs.DeadlineExceeded(f"job {self._id} not done after {timeout}s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def cancel(self) -> None:
        if self._event is not None:
            self._event.set()
        self._client.cancel(self._id)


__all__ = ["LocalPullJob", "ingest_with_retries", "start_local_pull"]
