"""The one job interface, for ingests and pulls, whichever backend runs them.

A :class:`JobClient` submits and finds jobs of both kinds; :class:`IngestJob` and
:class:`PullJob` are the handles it gives back. Two backends implement it: in this
process (:class:`ingestq.jobs.local.LocalClient`, no server) and through Celery on
Redis (:class:`ingestq.tasks.queue.QueueClient`). ``ingestq.tasks.client.connect``
picks one from the settings; nothing else ever asks which backend or kind it holds.

States: ``queued`` (published, not started), ``started``, ``retrying`` (with the
reason, e.g. "ref ... locked for 1.2s"), ``succeeded`` (the Info), ``failed`` (an
errdefs error), ``canceled``, ``unknown`` (no such job, or expired).

Job ids: the caller's, else one derived from an idempotency key (:func:`job_id_for`,
``uuid5``, the same in both backends), else a fresh ``uuid4``.

Imports store values; the request and pull value types of ingest/ and images/ appear
in annotations only.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from ingestq import errdefs
from ingestq.store.values import Info

if TYPE_CHECKING:
    from ingestq.images.request import PullRequest
    from ingestq.images.status import PullResult
    from ingestq.ingest.request import IngestRequest
    from ingestq.jobs.pullstatus import PullStatus

JOB_NAMESPACE = uuid.UUID("6f0d9a52-2b1c-4d5e-9a51-6b7c1e0f3a21")


def job_id_for(idempotency_key: str) -> str:
    """The job id an idempotency key maps to (``uuid5``, the same in both modes)."""
    return str(uuid.uuid5(JOB_NAMESPACE, idempotency_key))


def new_job_id(job_id: str | None, idempotency_key: str | None) -> str:
    """``job_id`` when given, else the id of ``idempotency_key``, else a fresh uuid4."""
    if job_id is not None:
        return job_id
    return job_id_for(idempotency_key) if idempotency_key else str(uuid.uuid4())


def check_same_request(
    idempotency_key: str, job_id: str, existing: Mapping[str, str], fields: Mapping[str, str]
) -> None:
    """FailedPrecondition naming ``idempotency_key`` when the job it already names
    (``existing``, its record; empty when gone) was for another request than ``fields``
    (its ``kind`` and JSON ``request``), so a reused key never silently answers with
    the first job of a different request."""
    if not existing:
        return

    def request_of(record: Mapping[str, str]) -> object:
        try:
            return json.loads(record.get("request") or "null")
        except ValueError:
            return record.get("request")

    if existing.get("kind") != fields.get("kind") or request_of(existing) != request_of(fields):
        raise errdefs.FailedPrecondition(
            f"idempotency key {idempotency_key!r} was used for job {job_id} with a "
            f"different request ({existing.get('kind', '?')} of {existing.get('source', '?')})",
            {"idempotency_key": idempotency_key, "job_id": job_id},
        )


class JobState(enum.StrEnum):
    """A job's state."""

    QUEUED = "queued"
    STARTED = "started"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    UNKNOWN = "unknown"

    @property
    def done(self) -> bool:
        """True for the final states."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED)


@dataclass(frozen=True)
class Progress:
    """Bytes written so far and the total (0 = unknown)."""

    offset: int
    total: int


@dataclass(frozen=True)
class RetryInfo:
    """Where a retrying job stands: the ``attempt`` that failed (1-based) of
    ``max_attempts`` (None: unbounded), when the next one starts (``next_at``, Unix
    seconds; None when unknown) and why (``reason``)."""

    attempt: int
    max_attempts: int | None
    next_at: float | None
    reason: str

    @classmethod
    def from_record(cls, record: dict[str, str], reason: str | None) -> RetryInfo | None:
        """The retry fields of a job record (``attempt``, ``max_attempts``,
        ``next_at``), or None when it has none or they are malformed."""
        try:
            attempt = int(record.get("attempt") or 0)
            most = record.get("max_attempts") or ""
            nxt = record.get("next_at") or ""
            max_attempts = int(most) if most else None
            next_at = float(nxt) if nxt else None
        except ValueError:
            return None
        if attempt <= 0:
            return None
        return cls(attempt, max_attempts, next_at, reason or record.get("reason", ""))

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"attempt": self.attempt, "max_attempts": self.max_attempts,
                "next_at": self.next_at, "reason": self.reason}  # fmt: skip


@dataclass(frozen=True)
class JobSummary:
    """One job as :meth:`JobClient.jobs` lists it."""

    job_id: str
    kind: str
    state: JobState
    source: str
    ref: str
    created_at: float
    parent: str
    reason: str

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (the CLI's keys)."""
        return {
            "job_id": self.job_id, "kind": self.kind, "state": self.state.value,
            "source": self.source, "ref": self.ref, "created_at": self.created_at,
            "parent": self.parent, "reason": self.reason,
        }  # fmt: skip


@dataclass(frozen=True)
class ActiveIngest:
    """One live write, as a backend lists it (:meth:`JobClient.active`): published by
    its worker's lease heartbeat (queue), or read from the store (in process)."""

    ref: str
    offset: int
    total: int
    expected: str
    started_at: datetime
    updated_at: datetime
    holder: str
    host: str
    pid: int
    fence: int
    job_id: str
    source: str
    rate: float

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (timestamps in ISO 8601)."""
        return {
            "ref": self.ref,
            "offset": self.offset,
            "total": self.total,
            "expected": self.expected,
            "started_at": self.started_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "holder": self.holder,
            "host": self.host,
            "pid": self.pid,
            "fence": self.fence,
            "job_id": self.job_id,
            "source": self.source,
            "rate": self.rate,
        }


class IngestJob(Protocol):
    """A handle on one ingest job (queued on workers, or running in this host)."""

    @property
    def id(self) -> str:
        """The job id (caller-chosen or generated)."""
        ...

    @property
    def ref(self) -> str:
        """The ingest ref the job writes (empty if unknown)."""
        ...

    @property
    def state(self) -> JobState:
        """The current state (a fresh read each time)."""
        ...

    @property
    def reason(self) -> str | None:
        """Why the job is retrying, or the message of its failure."""
        ...

    @property
    def progress(self) -> Progress | None:
        """Offset/total of the live write, the full size once succeeded, else None."""
        ...

    @property
    def source(self) -> str:
        """What the job reads from (a URL, a path, an image reference; empty if
        unknown)."""
        ...

    @property
    def retry(self) -> RetryInfo | None:
        """Where the job's retries stand while it is retrying a failed attempt, else
        None."""
        ...

    def wait(self, timeout: float | None = None) -> Info:
        """Block until the job is done; return the Info or raise its errdefs error
        (Canceled for a canceled job; DeadlineExceeded after ``timeout`` seconds;
        NotFound for an unknown job)."""
        ...

    def cancel(self) -> None:
        """Ask the job to stop: a queued job is dropped, a running one stops at its next
        chunk (the ingest is kept for resume) and fails with Canceled. NotFound for an
        unknown job (in process); Unavailable when Redis cannot be reached (queue)."""
        ...


class PullJob(Protocol):
    """A handle on one pull job (queued on workers, or running in this host)."""

    @property
    def id(self) -> str:
        """The job id."""
        ...

    @property
    def state(self) -> JobState:
        """The pull's state (a fresh read)."""
        ...

    def status(self) -> PullStatus:
        """The pull's state and every blob's (see :class:`PullStatus`)."""
        ...

    def wait(self, timeout: float | None = None) -> PullResult:
        """Block until done; the result, or the pull's errdefs error (DeadlineExceeded
        after ``timeout`` seconds, NotFound for an unknown job)."""
        ...

    def cancel(self) -> None:
        """Stop the pull and its children (ingests are kept for resume)."""
        ...


class IngestJobs(Protocol):
    """Submits and finds ingest jobs."""

    def submit_ingest(
        self,
        request: IngestRequest,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        retries: int | None = None,
    ) -> IngestJob:
        """Start ``request`` as job ``job_id`` (see :func:`new_job_id`), or return the
        existing job of that id or idempotency key (nothing new starts then).
        ``retries`` bounds the retries of an Unavailable source for this job (default:
        the settings'). Unavailable when the backend cannot be reached."""
        ...  # fmt: skip

    def submit_ingests(
        self, requests: Sequence[IngestRequest], *, retries: int | None = None
    ) -> Sequence[IngestJob]:
        """Start every request of ``requests`` as a new job (a fresh id each) in one
        call (on the queue: one Redis pipeline for the records, one producer connection
        for the messages); their handles, in order. ``retries`` as for
        :meth:`submit_ingest`. Unavailable when the backend cannot be reached (on the
        queue the jobs not published by then are left unrecorded)."""
        ...  # fmt: skip

    def job(self, job_id: str) -> IngestJob:
        """A handle on ingest job ``job_id`` (state ``unknown`` if there is none)."""
        ...


class PullJobs(Protocol):
    """Submits and finds pull jobs."""

    def submit_pull(
        self,
        request: PullRequest,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        retries: int | None = None,
    ) -> PullJob:
        """Start ``request`` (already validated, platforms resolved) as job ``job_id``,
        or return the existing job of that id or idempotency key. Unavailable when the
        backend cannot be reached."""
        ...  # fmt: skip

    def pull(self, job_id: str) -> PullJob:
        """A handle on pull job ``job_id`` (state ``unknown`` if there is none)."""
        ...


class JobClient(IngestJobs, PullJobs, Protocol):
    """Both job kinds on one backend, plus what the backend shows of live writes."""

    @property
    def in_process(self) -> bool:
        """True when jobs run in this process (they stop with it); False when they run
        on workers (a producer may detach)."""
        ...

    def active(self) -> list[ActiveIngest]:
        """Every live ingest this client can see. Unavailable when Redis is down."""
        ...

    def jobs(self, limit: int = 1000) -> list[JobSummary]:
        """The jobs this backend recorded, newest first (at most ``limit``).
        Unavailable when the backend cannot be reached."""
        ...

    def close(self) -> None:
        """Release connections (and, in process, wait for the jobs started here)."""
        ...


__all__ = [
    "JOB_NAMESPACE",
    "ActiveIngest",
    "IngestJob",
    "IngestJobs",
    "JobClient",
    "JobState",
    "JobSummary",
    "Progress",
    "PullJob",
    "PullJobs",
    "RetryInfo",
    "job_id_for",
    "new_job_id",
]
