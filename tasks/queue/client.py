"""The Celery backend of the job interface: :class:`QueueClient` publishes ingest and
pull jobs to workers through Redis and reads their state.

Imports celery (through the app), redis, errdefs, the job interface and settings, and
this package's Redis adapters and job handles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ingestq import errdefs
from ingestq.images.request import PullRequest
from ingestq.ingest.request import IngestRequest
from ingestq.jobs.api import ActiveIngest, JobState, JobSummary
from ingestq.jobs.config import Settings
from ingestq.jobs.records import KIND_INGEST
from ingestq.tasks.app import make_app
from ingestq.tasks.queue.context import QueueContext
from ingestq.tasks.queue.ingest import QueueIngestJob, submit_ingest, submit_ingests
from ingestq.tasks.queue.pull import QueuePullJob, submit_pull
from ingestq.tasks.records import RedisJobRecords
from ingestq.tasks.redisconn import redis_client
from ingestq.tasks.results import CeleryResults
from ingestq.tasks.statusboard import StatusBoard

_WITH_REASON = (JobState.RETRYING, JobState.FAILED, JobState.CANCELED)

#: Socket timeout of the producer's Redis clients, seconds.
SOCKET_TIMEOUT = 10.0


class QueueClient:
    """Jobs on Celery workers through Redis (the :class:`ingestq.jobs.api.JobClient`
    protocol). FailedPrecondition when ``settings`` configure no Redis."""

    def __init__(self, settings: Settings) -> None:
        if not settings.queued or settings.lock_url is None or settings.result_url is None:
            raise errdefs.FailedPrecondition("QueueClient needs a Redis configuration")
        self.settings = settings
        self.app = make_app(settings, main="ingestq-producer", results=False)
        self.client = redis_client(settings.lock_url, socket_timeout=SOCKET_TIMEOUT)
        self.result_client = (
            self.client
            if settings.result_url == settings.lock_url
            else redis_client(settings.result_url, socket_timeout=SOCKET_TIMEOUT)
        )
        self.records = RedisJobRecords(self.client, settings.result_expires)
        self.board = StatusBoard(self.client, stale=max(3 * settings.heartbeat_interval, 2.0))
        self._ctx = QueueContext(self.app, self.records, CeleryResults(self.result_client),
                                 self.board)  # fmt: skip

    @property
    def in_process(self) -> bool:
        """False: jobs run on workers."""
        return False

    def meta(self, job_id: str) -> dict[str, Any] | None:
        """Celery's raw result meta of ``job_id`` (JSON), or None."""
        return self._ctx.results.meta(job_id)

    def submit_ingest(
        self,
        request: IngestRequest,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        retries: int | None = None,
    ) -> QueueIngestJob:
        """Publish ``request`` (once per job id / idempotency key); ``retries`` bounds
        its source retries. Unavailable when Redis cannot be reached (nothing is left
        recorded then)."""
        return submit_ingest(self._ctx, request, job_id, idempotency_key, retries)

    def submit_ingests(
        self, requests: Sequence[IngestRequest], *, retries: int | None = None
    ) -> list[QueueIngestJob]:
        """Publish every request as a new job: the records in one Redis pipeline, the
        messages through one producer connection; small local files share messages
        (``INGESTQ_BATCH_JOBS`` jobs each at most: :mod:`ingestq.tasks.batching`).
        Their handles, in order. Unavailable when Redis cannot be reached (the jobs not
        published by then are left unrecorded)."""
        return submit_ingests(self._ctx, requests, retries, self.settings.batch_jobs)

    def submit_pull(
        self,
        request: PullRequest,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        retries: int | None = None,
    ) -> QueuePullJob:
        """Publish the pull ``request`` (once per job id / idempotency key).
        Unavailable when Redis cannot be reached."""
        return submit_pull(self._ctx, request, job_id, idempotency_key, retries)

    def job(self, job_id: str) -> QueueIngestJob:
        """A handle on ingest job ``job_id``."""
        return QueueIngestJob(self._ctx, job_id)

    def pull(self, job_id: str) -> QueuePullJob:
        """A handle on pull job ``job_id``."""
        return QueuePullJob(self._ctx, job_id)

    def active(self) -> list[ActiveIngest]:
        """Every live ingest on every worker."""
        return self.board.list_active()

    def jobs(self, limit: int = 1000) -> list[JobSummary]:
        """The jobs in the Redis job records, newest first, each in the state Celery's
        result shows. Unavailable when Redis is down."""
        out = []
        for job_id, rec in self.records.list(limit):
            handle = QueueIngestJob(self._ctx, job_id, rec.get("ref", ""))
            try:
                state = handle.state
                reason = handle.reason if state in _WITH_REASON else None
            except errdefs.InvalidArgument as e:
                state, reason = JobState.UNKNOWN, str(e)
            try:
                created = float(rec.get("created_at") or 0)
            except ValueError:
                created = 0.0
            out.append(JobSummary(job_id, rec.get("kind", KIND_INGEST), state,
                                  rec.get("source", ""), rec.get("ref", ""), created,
                                  rec.get("parent", ""), reason or ""))  # fmt: skip
        return out

    def consumers(self, timeout: float = 1.0) -> dict[str, list[str]]:
        """The workers that answer within ``timeout`` seconds, each with the queues it
        consumes (Celery's ``inspect active_queues``, a broadcast on the broker).
        Unavailable when the broker cannot be reached."""
        try:
            replies = self.app.control.inspect(timeout=timeout).active_queues() or {}
        except Exception as e:
            raise errdefs.Unavailable(f"inspect workers: {e}") from e
        out: dict[str, list[str]] = {}
        for name, queues in replies.items():
            names = [q.get("name", "") for q in queues if isinstance(q, dict)]
            out[str(name)] = [n for n in names if isinstance(n, str)]
        return out

    def close(self) -> None:
        """Close connections."""
        self.client.close()
        if self.result_client is not self.client:
            self.result_client.close()
        self.app.close()


__all__ = ["QueueClient"]
