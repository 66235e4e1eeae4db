"""The embedded default: jobs run in the calling process, no server needed.

The same ingest core as on workers (:func:`tasks.ingest.ingest`), with the store's file
locks only: several ``ingestq`` processes on one host coordinate through the store (a
locked ref waits with backoff, then finds the digest committed and fetches nothing).

Each job runs in a thread of this process and keeps a record at
``<root>/jobs/<id>.json`` (state, ref, reason, result or error record, pid), so other
processes on the host can see its state (``ingestq job status``), progress (from the
ingest directory) and cancel it (``<root>/jobs/<id>.cancel``). A job whose process died
before finishing reads as failed with Aborted.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ingestq import errdefs
from ingestq.fetch.specs import source_from_spec, source_name
from ingestq.ingest.hooks import Hooks
from ingestq.ingest.outcome import RefBusy
from ingestq.ingest.request import IngestRequest
from ingestq.ingest.wait import ingest
from ingestq.jobs.api import IngestJob, JobState, Progress, job_id_for
from ingestq.jobs.config import Settings, open_store
from ingestq.jobs.retry import backoff
from ingestq.store.codec import info_from_json, info_to_json
from ingestq.store.values import Info, Status
from ingestq.tasks.statusboard import ActiveIngest

CANCEL_POLL = 0.25


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CancelHooks(Hooks):
    """Cancellation for embedded jobs: an event in this process, or the job's ``.cancel``
    file written by another process (``ingestq job cancel``), checked every
    ``CANCEL_POLL`` seconds."""

    def __init__(self, event: threading.Event, cancel_file: Path) -> None:
        self.event = event
        self._file = cancel_file
        self._next = 0.0

    def cancelled(self) -> bool:
        if self.event.is_set():
            return True
        now = time.monotonic()
        if now >= self._next:
            self._next = now + CANCEL_POLL
            if self._file.exists():
                self.event.set()
        return self.event.is_set()


class LocalJob:
    """A job of the embedded default (the :class:`tasks.jobapi.IngestJob` protocol)."""

    def __init__(self, client: LocalClient, job_id: str) -> None:
        self._client = client
        self._id = job_id

    @property
    def id(self) -> str:
        return self._id

    def _record(self) -> dict[str, Any] | None:
        try:
            rec = json.loads(self._client.job_path(self._id).read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return {"state": "failed", "error": errdefs.to_json_dict(
                errdefs.DataLoss(f"job record {self._id} is unreadable"))}  # fmt: skip
        if not isinstance(rec, dict):
            return None
        state = str(rec.get("state"))
        done = state in {s.value for s in JobState if s.done}
        if not done and rec.get("host") == socket.gethostname():
            pid = int(rec.get("pid", 0))
            if pid != os.getpid() and not _pid_alive(pid):
                rec["state"] = JobState.FAILED.value
                rec["error"] = errdefs.to_json_dict(
                    errdefs.Aborted(f"job {self._id}: process {pid} exited before finishing")
                )
        return rec

    @property
    def ref(self) -> str:
        rec = self._record()
        return str(rec.get("ref", "")) if rec else ""

    @property
    def state(self) -> JobState:
        rec = self._record()
        if rec is None:
            return JobState.UNKNOWN
        try:
            return JobState(str(rec.get("state")))
        except ValueError:
            return JobState.UNKNOWN

    @property
    def reason(self) -> str | None:
        rec = self._record()
        if rec is None:
            return None
        err = self._error(rec)
        return str(err) if err is not None else rec.get("reason")

    @staticmethod
    def _error(rec: dict[str, Any]) -> errdefs.ErrdefsError | None:
        obj = rec.get("error")
        if not isinstance(obj, dict):
            return None
        try:
            return errdefs.from_json_dict(obj)
        except errdefs.InvalidArgument as e:
            return e

    @property
    def progress(self) -> Progress | None:
        rec = self._record()
        if rec is None:
            return None
        if rec.get("state") == JobState.SUCCEEDED.value and isinstance(rec.get("result"), dict):
            size = int(rec["result"].get("size", 0))
            return Progress(size, size)
        try:
            st = self._client.store.status(str(rec.get("ref", "")))
        except errdefs.ErrdefsError:
            return None
        return Progress(st.offset, st.total)

    def wait(self, timeout: float | None = None) -> Info:
        deadline = None if timeout is None else time.monotonic() + timeout
        thread = self._client.thread(self._id)
        if thread is not None:
            thread.join(timeout)
        delay = 0.01
        while True:
            rec = self._record()
            if rec is None:
                raise errdefs.NotFound(f"job {self._id}")
            state = rec.get("state")
            if state == JobState.SUCCEEDED.value:
                return info_from_json(rec.get("result") or {})
            if state in (JobState.FAILED.value, JobState.CANCELED.value):
                err = self._error(rec) or errdefs.Unknown(f"job {self._id} {state}")
                raise err
            if deadline is not None and time.monotonic() + delay > deadline:
                raise errdefs.DeadlineExceeded(f"job {self._id} not done after {timeout}s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def cancel(self) -> None:
        self._client.cancel(self._id)


class LocalClient:
    """Runs ingest jobs in this process against the store at ``settings.root``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = open_store(settings)
        self.jobs_dir = self.store.root / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._threads: dict[str, threading.Thread] = {}
        self._events: dict[str, threading.Event] = {}
        self._mutex = threading.Lock()

    def job_path(self, job_id: str) -> Path:
        """Where a job's record lives (the id is hashed if it is not a plain name)."""
        safe = job_id if job_id.replace("-", "").isalnum() and len(job_id) <= 100 else (
            uuid.uuid5(uuid.NAMESPACE_URL, job_id).hex
        )  # fmt: skip
        return self.jobs_dir / f"{safe}.json"

    def thread(self, job_id: str) -> threading.Thread | None:
        """The thread running ``job_id`` in this process, if any."""
        with self._mutex:
            return self._threads.get(job_id)

    def _update(self, job_id: str, base: dict[str, Any], **fields: Any) -> None:
        base.update(fields, updated_at=time.time())
        _write_json(self.job_path(job_id), base)

    def enqueue(
        self,
        request: IngestRequest,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> IngestJob:
        """Start ``request`` in a thread of this process (or return the existing job of
        the same id / idempotency key)."""
        if job_id is None:
            job_id = job_id_for(idempotency_key) if idempotency_key else str(uuid.uuid4())
        record: dict[str, Any] = {
            "id": job_id,
            "ref": request.ref,
            "source": source_name(request.source),
            "state": JobState.QUEUED.value,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "created_at": time.time(),
        }
        path = self.job_path(job_id)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return LocalJob(self, job_id)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        event = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(job_id, request, record, event), name=f"ingest-{job_id}"
        )
        with self._mutex:
            self._threads[job_id] = thread
            self._events[job_id] = event
        thread.start()
        return LocalJob(self, job_id)

    def _run(
        self, job_id: str, request: IngestRequest, record: dict[str, Any], event: threading.Event
    ) -> None:
        hooks = CancelHooks(event, path_with_suffix(self.job_path(job_id), ".cancel"))
        self._update(job_id, record, state=JobState.STARTED.value)

        def on_wait(busy: RefBusy, delay: float) -> None:
            self._update(job_id, record, state=JobState.RETRYING.value, reason=str(busy.error))

        attempt = 0
        try:
            source = source_from_spec(request.source, self.settings.fetch_options())
            while True:
                try:
                    result = ingest(self.store, source, request, hooks=hooks, on_wait=on_wait)
                    break
                except errdefs.Unavailable as e:
                    if attempt >= self.settings.max_source_retries:
                        raise
                    delay = backoff(attempt, 1.0, self.settings.retry_cap)
                    after = e.details.get("retry_after")
                    if after is not None:
                        delay = max(delay, min(float(after), self.settings.retry_cap))
                    attempt += 1
                    self._update(job_id, record, state=JobState.RETRYING.value, reason=str(e))
                    if event.wait(delay) or hooks.cancelled():
                        raise errdefs.Canceled(f"job {job_id} canceled") from e
        except BaseException as e:
            err = errdefs.from_exception(e)
            state = JobState.CANCELED if isinstance(err, errdefs.Canceled) else JobState.FAILED
            self._update(job_id, record, state=state.value, error=errdefs.to_json_dict(err))
            if not isinstance(e, Exception):
                raise
            return
        self._update(
            job_id, record, state=JobState.SUCCEEDED.value, reason=None,
            result={**info_to_json(result.info), "fetched": result.fetched},
        )  # fmt: skip

    def job(self, job_id: str) -> IngestJob:
        """A handle on a job of this host."""
        return LocalJob(self, job_id)

    def cancel(self, job_id: str) -> None:
        """Cancel ``job_id`` (in this process or another on this host)."""
        if not self.job_path(job_id).exists():
            raise errdefs.NotFound(f"job {job_id}")
        with self._mutex:
            event = self._events.get(job_id)
        if event is not None:
            event.set()
        path_with_suffix(self.job_path(job_id), ".cancel").touch()

    def active(self) -> list[ActiveIngest]:
        """The ingests in this host's store, live (locked by a writer) or resumable."""
        return [_from_status(s) for s in self.store.list_statuses()]

    def close(self) -> None:
        """Wait for the jobs started by this client."""
        with self._mutex:
            threads = list(self._threads.values())
        for t in threads:
            t.join()


def path_with_suffix(path: Path, suffix: str) -> Path:
    """``<stem><suffix>`` beside ``path``."""
    return path.with_name(path.stem + suffix)


def _from_status(s: Status) -> ActiveIngest:
    h = s.holder
    return ActiveIngest(
        ref=s.ref,
        offset=s.offset,
        total=s.total,
        expected=str(s.expected) if s.expected else "",
        started_at=s.started_at,
        updated_at=s.updated_at,
        holder=h.id if h else "",
        host=h.host if h else "",
        pid=h.pid if h else 0,
        fence=h.fence if h else 0,
        job_id="",
        source="",
        rate=0.0,
    )
