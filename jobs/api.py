"""What producers see of a job, in both modes: states, progress, the IngestJob protocol,
and how a stored failure becomes an errdefs error again.

States: ``queued`` (published, not started), ``started``, ``retrying`` (with the
reason, e.g. "ref ... locked for 1.2s"), ``succeeded`` (the Info), ``failed`` (an
errdefs error), ``canceled``, ``unknown`` (no such job, or expired).
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from ingestq import errdefs
from ingestq.store.values import Info

if TYPE_CHECKING:
    from ingestq.ingest.request import IngestRequest
    from ingestq.tasks.statusboard import ActiveIngest

#: The module names Celery records for errdefs kinds (``ingestq.errdefs`` since the
#: package was renamed; plain ``errdefs`` in records written before).
_ERRDEFS_MODULES = frozenset({"ingestq.errdefs", "errdefs"})


JOB_NAMESPACE = uuid.UUID("6f0d9a52-2b1c-4d5e-9a51-6b7c1e0f3a21")


def job_id_for(idempotency_key: str) -> str:
    """The job id an idempotency key maps to (``uuid5``, the same in both modes)."""
    return str(uuid.uuid5(JOB_NAMESPACE, idempotency_key))


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

    def wait(self, timeout: float | None = None) -> Info:
        """Block until the job is done; return the Info or raise its errdefs error
        (Canceled for a canceled job; DeadlineExceeded after ``timeout`` seconds;
        NotFound for an unknown job)."""
        ...

    def cancel(self) -> None:
        """Ask the job to stop: a queued job is dropped, a running one stops at its next
        chunk (the ingest is kept for resume) and fails with Canceled."""
        ...


T = TypeVar("T")


def poll_outcome(
    job_id: str,
    outcome: Callable[[], object],
    exists: Callable[[], bool],
    result_type: type[T],
    timeout: float | None,
    *,
    max_delay: float,
) -> T:
    """Poll a queued job until ``outcome()`` gives a ``result_type`` (returned) or an errdefs
    error (raised). NotFound when the job is unknown (``exists()`` false while there is no
    outcome), DeadlineExceeded after ``timeout`` seconds; an Unavailable Redis (restarting)
    is waited out until the deadline."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.01
    known = False
    while True:
        result: object = None
        try:
            result = outcome()
            if result is None and not known:
                known = exists()
                if not known:
                    raise errdefs.NotFound(f"job {job_id}")
        except errdefs.Unavailable:
            result = None
        if isinstance(result, result_type):
            return result
        if isinstance(result, errdefs.ErrdefsError):
            raise result
        if deadline is not None and time.monotonic() + delay > deadline:
            raise errdefs.DeadlineExceeded(f"job {job_id} not done after {timeout}s")
        time.sleep(delay)
        delay = min(delay * 1.5, max_delay)


def error_from_celery_exc(obj: object) -> errdefs.ErrdefsError:
    """The errdefs error described by Celery's stored exception dict
    (``exc_type``/``exc_message``/``exc_module``), decoded by registry lookup only:
    an errdefs kind from module ``errdefs`` is rebuilt with its message and details;
    anything else (any class, any module) is Unknown carrying ``<type>: <message>``.
    Never imports or constructs anything outside the registry."""
    if not isinstance(obj, Mapping):
        return errdefs.Unknown(f"job failed: {obj!r}"[:500])
    exc_type = obj.get("exc_type")
    exc_module = obj.get("exc_module")
    args = obj.get("exc_message")
    if not isinstance(args, list | tuple):
        args = [args] if args is not None else []
    message = args[0] if args and isinstance(args[0], str) else (str(args[0]) if args else "")
    if isinstance(exc_type, str) and isinstance(exc_module, str) and exc_module in _ERRDEFS_MODULES:
        kind = errdefs.KINDS.get(exc_type) or (
            errdefs.Unimplemented if exc_type == "NotImplemented" else None
        )
        if kind is not None:
            details = args[1] if len(args) > 1 and isinstance(args[1], Mapping) else None
            return kind(message, {str(k): str(v) for k, v in details.items()} if details else None)
    name = exc_type if isinstance(exc_type, str) else "error"
    return errdefs.Unknown(f"{name}: {message}" if message else name)


class JobClient(Protocol):
    """Enqueues and finds jobs: :class:`tasks.producer.QueueClient` (Redis) or
    :class:`tasks.embedded.LocalClient` (this host, no server)."""

    def enqueue(
        self,
        request: IngestRequest,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> IngestJob:
        """Start (or find, for a known id/key) the job for ``request``."""
        ...  # fmt: skip

    def job(self, job_id: str) -> IngestJob:
        """A handle on an existing job."""
        ...

    def active(self) -> list[ActiveIngest]:
        """Every live ingest this client can see."""
        ...

    def close(self) -> None:
        """Release connections (and, embedded, wait for running jobs)."""
        ...
