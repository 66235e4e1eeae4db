"""What every in-process job shares: the context (settings, store, record store, the
threads running jobs), starting a job in a thread with its record kept current, and
reading a job's state back from its record.

Record fields of in-process jobs (besides those of :mod:`ingestq.jobs.records`):
``state`` (a :class:`JobState` value), ``reason``, ``result`` (JSON), ``pid``,
``host``, ``updated_at``. A job whose process died before finishing (same host, pid
gone) reads as failed with Aborted.

Imports errdefs, store, and this package's interface, records, cancel hooks and wait.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ingestq import errdefs
from ingestq.jobs.api import JobState, new_job_id
from ingestq.jobs.cancel import CancelHooks
from ingestq.jobs.config import Settings
from ingestq.jobs.records import JobRecordStore, error_from_text, error_text, json_field
from ingestq.jobs.wait import poll_outcome
from ingestq.s3 import S3Store
from ingestq.store.local import LocalStore

T = TypeVar("T")

#: The longest pause between two reads of a record while waiting for a job.
MAX_POLL = 0.25

_DONE = frozenset(s.value for s in JobState if s.done)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobThreads:
    """The jobs running in this process: a thread and a cancel event per job id."""

    def __init__(self) -> None:
        self._threads: dict[str, threading.Thread] = {}
        self._events: dict[str, threading.Event] = {}
        self._mutex = threading.Lock()

    def start(self, job_id: str, target: Callable[[threading.Event], None], name: str) -> None:
        """Run ``target(event)`` in a new thread named ``name``; ``event`` is the job's
        cancel event."""
        event = threading.Event()
        thread = threading.Thread(target=target, args=(event,), name=name)
        with self._mutex:
            self._threads[job_id] = thread
            self._events[job_id] = event
        thread.start()

    def event(self, job_id: str) -> threading.Event | None:
        """The cancel event of ``job_id`` if it runs in this process."""
        with self._mutex:
            return self._events.get(job_id)

    def join(self, job_id: str, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds for ``job_id``'s thread, if it is ours."""
        with self._mutex:
            thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)

    def join_all(self) -> None:
        """Wait for every job started here."""
        with self._mutex:
            threads = list(self._threads.values())
        for t in threads:
            t.join()


@dataclass(frozen=True)
class LocalContext:
    """Everything in-process jobs of one store root share."""

    settings: Settings
    store: LocalStore | S3Store
    records: JobRecordStore
    threads: JobThreads

    def submit(
        self,
        job_id: str | None,
        idempotency_key: str | None,
        fields: Mapping[str, str],
        body: Callable[[str, CancelHooks], Mapping[str, str]],
        name: str,
    ) -> str:
        """Record a job and run ``body(job_id, hooks)`` in a thread named
        ``<name>-<id>``, unless the id or key already has a job (then nothing starts).
        The record goes ``queued``, ``started``, then ``succeeded`` with the fields
        ``body`` returns, or ``failed``/``canceled`` with the error. Returns the id."""
        job_id = new_job_id(job_id, idempotency_key)
        record = {
            **fields,
            "state": JobState.QUEUED.value,
            "pid": str(os.getpid()),
            "host": socket.gethostname(),
        }
        job_id, created = self.records.create(job_id, record, idempotency_key)
        if created:
            self.threads.start(job_id, lambda event: self._run(job_id, event, body),
                               f"{name}-{job_id}")  # fmt: skip
        return job_id

    def update(self, job_id: str, **fields: str) -> None:
        """Merge ``fields`` (and ``updated_at``) into ``job_id``'s record."""
        self.records.update(job_id, {**fields, "updated_at": f"{time.time():.6f}"})

    def _run(
        self,
        job_id: str,
        event: threading.Event,
        body: Callable[[str, CancelHooks], Mapping[str, str]],
    ) -> None:
        hooks = CancelHooks(self.records, job_id, event=event)
        try:
            self.update(job_id, state=JobState.STARTED.value)
            result = body(job_id, hooks)
        except BaseException as e:
            err = errdefs.from_exception(e)
            state = JobState.CANCELED if isinstance(err, errdefs.Canceled) else JobState.FAILED
            self.update(job_id, state=state.value, reason=str(err), error=error_text(err))
            if not isinstance(e, Exception):
                raise
            return
        self.update(job_id, state=JobState.SUCCEEDED.value, reason="", **result)

    def cancel(self, job_id: str) -> None:
        """Cancel ``job_id``, in this process or another of the host. NotFound for an
        unknown job."""
        if not self.records.get(job_id):
            raise errdefs.NotFound(f"job {job_id}")
        event = self.threads.event(job_id)
        if event is not None:
            event.set()
        self.records.request_cancel(job_id)

    def read(self, job_id: str) -> dict[str, str]:
        """``job_id``'s record (empty when unknown), failed with Aborted when the
        process that ran it died before finishing, failed with DataLoss when the
        record is unreadable."""
        try:
            rec = self.records.get(job_id)
        except errdefs.DataLoss as e:
            return {"state": JobState.FAILED.value, "error": error_text(e)}
        if rec and rec.get("state") not in _DONE and rec.get("host") == socket.gethostname():
            try:
                pid = int(rec.get("pid", "0"))
            except ValueError:
                pid = 0
            if pid > 0 and pid != os.getpid() and not _pid_alive(pid):
                died = errdefs.Aborted(f"job {job_id}: process {pid} exited before finishing")
                rec.update(state=JobState.FAILED.value, error=error_text(died))
        return rec


def state_of(record: Mapping[str, str]) -> JobState:
    """The state a record shows (``unknown`` for none)."""
    if not record:
        return JobState.UNKNOWN
    try:
        return JobState(record.get("state", ""))
    except ValueError:
        return JobState.UNKNOWN


class RecordedJob:
    """What in-process job handles of both kinds share: id, state, reason, waiting
    and cancelling, all read from the job's record."""

    def __init__(self, ctx: LocalContext, job_id: str) -> None:
        self._ctx = ctx
        self._id = job_id

    @property
    def id(self) -> str:
        """The job id."""
        return self._id

    def _record(self) -> dict[str, str]:
        return self._ctx.read(self._id)

    @property
    def state(self) -> JobState:
        """The job's state (a fresh read)."""
        return state_of(self._record())

    @property
    def reason(self) -> str | None:
        """Why the job is retrying, or the message of its failure."""
        rec = self._record()
        err = error_from_text(rec.get("error"))
        return str(err) if err is not None else rec.get("reason") or None

    def _wait(self, timeout: float | None, parse: Callable[[Any], T], kind: type[T]) -> T:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._ctx.threads.join(self._id, timeout)

        def outcome() -> T | errdefs.ErrdefsError | None:
            rec = self._record()
            state = state_of(rec)
            if state is JobState.SUCCEEDED:
                try:
                    return parse(json_field(rec, "result") or {})
                except errdefs.InvalidArgument as e:
                    return e
            if state.done:
                err = error_from_text(rec.get("error"))
                return err or errdefs.Unknown(f"job {self._id} {state.value}")
            return None

        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        return poll_outcome(
            self._id, outcome, lambda: bool(self._record()), kind, remaining, max_delay=MAX_POLL
        )

    def cancel(self) -> None:
        """Cancel the job (see :meth:`LocalContext.cancel`)."""
        self._ctx.cancel(self._id)


__all__ = ["JobThreads", "LocalContext", "RecordedJob", "state_of"]
