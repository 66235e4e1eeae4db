"""What every in-process job shares: the context (settings, store, record store, the
threads running jobs), starting a job in a thread with its record kept current, and
reading a job's state back from its record.

Record fields of in-process jobs (besides those of :mod:`ingestq.jobs.records`):
``state`` (a :class:`JobState` value), ``reason``, ``result`` (JSON), ``pid``,
``host``, ``updated_at``. A job whose process died before finishing (same host, pid
gone) reads as failed with Aborted.

A job's thread never ends without an outcome: whatever its body raises, record writes
included, becomes the job's error, held in memory (:class:`JobThreads`) so that a
waiter in this process gets it even when the record cannot be written (a full disk);
writing the final record is best effort.

Imports errdefs, store, and this package's interface, records, cancel hooks and wait.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ingestq import errdefs
from ingestq.jobs.api import JobState, check_same_request, new_job_id
from ingestq.jobs.cancel import CancelHooks
from ingestq.jobs.config import Settings
from ingestq.jobs.records import JobRecordStore, error_from_text, error_text, json_field
from ingestq.jobs.wait import poll_outcome
from ingestq.store.local import LocalStore

if TYPE_CHECKING:
    from ingestq.s3 import S3Store

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
    """The jobs running in this process: a thread, a cancel event and, once the thread
    ends, the outcome it held in memory, per job id.

    The outcome is what a waiter in this process trusts when the record on disk lags
    behind (a record write that failed, e.g. on a full disk): a job's thread never
    dies without leaving one.
    """

    def __init__(self) -> None:
        self._threads: dict[str, threading.Thread] = {}
        self._events: dict[str, threading.Event] = {}
        self._outcomes: dict[str, dict[str, str]] = {}
        self._finished: dict[str, threading.Event] = {}
        self._mutex = threading.Lock()

    def start(self, job_id: str, target: Callable[[threading.Event], None], name: str) -> None:
        """Run ``target(event)`` in a new thread named ``name``; ``event`` is the job's
        cancel event. Whatever ``target`` raises ends as the job's outcome (Unknown
        for a non-errdefs error) unless it set one."""
        event = threading.Event()
        finished = threading.Event()

        def run() -> None:
            try:
                target(event)
            except BaseException as e:
                with self._mutex:
                    self._outcomes.setdefault(job_id, _failure(e))
                if not isinstance(e, Exception):
                    raise
            finally:
                finished.set()

        thread = threading.Thread(target=run, name=name)
        with self._mutex:
            self._threads[job_id] = thread
            self._events[job_id] = event
            self._finished[job_id] = finished
        thread.start()

    def settle(self, job_id: str, fields: Mapping[str, str]) -> None:
        """Hold ``fields`` (a finished record's ``state``, ``result`` or ``error``) as
        ``job_id``'s outcome in memory."""
        with self._mutex:
            self._outcomes[job_id] = dict(fields)

    def outcome(self, job_id: str) -> dict[str, str] | None:
        """The outcome of ``job_id`` when its thread ran here and ended: the fields it
        settled, or a failure (Aborted) when the thread is gone without one. None while
        it runs or when the job is not ours."""
        with self._mutex:
            finished = self._finished.get(job_id)
            held = self._outcomes.get(job_id)
        if held is not None:
            return held
        if finished is None or not finished.is_set():
            return None
        with self._mutex:
            held = self._outcomes.get(job_id)
        if held is not None:
            return held
        return _failure(errdefs.Aborted(f"job {job_id}: its thread ended without an outcome"))

    def event(self, job_id: str) -> threading.Event | None:
        """The cancel event of ``job_id`` if it runs in this process."""
        with self._mutex:
            return self._events.get(job_id)

    def join(self, job_id: str, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds for ``job_id``'s thread, if it is ours. Waits
         on an event the thread sets last, not on ``Thread.join``: a KeyboardInterrupt
         that lands in ``join`` can leave the thread marked as stopped while it still runs
        , and this wait is what a Ctrl-C'd command relies on."""
        with self._mutex:
            finished = self._finished.get(job_id)
        if finished is not None:
            finished.wait(timeout)

    def join_all(self) -> None:
        """Wait for every job started here."""
        with self._mutex:
            threads = list(self._threads.values())
        for t in threads:
            t.join()


def _failure(e: BaseException) -> dict[str, str]:
    """The finished-record fields of a job that ended with ``e``."""
    err = errdefs.from_exception(e)
    state = JobState.CANCELED if isinstance(err, errdefs.Canceled) else JobState.FAILED
    return {"state": state.value, "reason": str(err), "error": error_text(err)}


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
        ``<name>-<id>``, unless the id or key already has a job (then nothing starts;
        FailedPrecondition when the key's job was for another request).
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
        if not created and idempotency_key:
            check_same_request(idempotency_key, job_id, self.records.get(job_id), fields)
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
        # The flag is a file: one stat per chunk costs nothing, so a cancel from
        # another process is seen at the next chunk however soon it comes.
        hooks = CancelHooks(self.records, job_id, event=event, poll=0.0)
        try:
            self.update(job_id, state=JobState.STARTED.value)
            done = {"state": JobState.SUCCEEDED.value, "reason": "", **body(job_id, hooks)}
        except BaseException as e:
            done = _failure(e)
            self.threads.settle(job_id, done)
            self._record_outcome(job_id, done)
            if not isinstance(e, Exception):
                raise
            return
        self.threads.settle(job_id, done)
        self._record_outcome(job_id, done)

    def _record_outcome(self, job_id: str, done: Mapping[str, str]) -> None:
        """Write a finished job's outcome to its record, best effort: the outcome is
        already held in memory, and a record that cannot be written (a full disk) must
        not keep the job from ending. Other processes then read the job as aborted once
        this one exits (its pid is in the record)."""
        with contextlib.suppress(Exception):
            self.update(job_id, **done)

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
        record is unreadable. For a job whose thread ran in this process and ended,
        the outcome held in memory wins over a record that could not be written."""
        held = self.threads.outcome(job_id)
        try:
            rec = self.records.get(job_id)
        except errdefs.DataLoss as e:
            return held or {"state": JobState.FAILED.value, "error": error_text(e)}
        except errdefs.ErrdefsError:
            if held is None:
                raise
            return held
        if held is not None and state_of(rec) is not state_of(held):
            return {**rec, **held}
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
