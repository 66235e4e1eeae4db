"""The producer API: enqueue ingest jobs and follow them, in either mode.

>>> job = enqueue_ingest("https://example.com/blob", digest="sha256:...", size=1234)
>>> info = job.wait(timeout=600)        # the blob's Info, or raises its errdefs error

With Redis configured (``INGESTQ_REDIS_URL`` ...), jobs are Celery messages drained by
workers; without it, the same ingest core runs in this process (:mod:`ingestq.jobs.local`).

Job ids: pass ``job_id`` to choose one, or ``idempotency_key`` to derive one
(``uuid5``) and guard publishing with ``SET NX``: enqueueing twice with the same key or
id returns the first job and publishes nothing (Celery itself does not deduplicate
ids). Use a key per ingest *request*: a finished job keeps its result until it expires.

The queue-side job reads Celery's result meta directly from Redis (plain JSON) and
never lets Celery rebuild exceptions: a failure becomes its errdefs error through the
job's stored error record, else by registry lookup of the stored class name
(:func:`tasks.jobapi.error_from_celery_exc`). A tampered meta can never make the
producer import, construct or raise anything but an errdefs kind.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import redis

from ingestq import errdefs
from ingestq.fetch.specs import source_name, spec_from_text
from ingestq.ingest.request import IngestRequest, make_request
from ingestq.jobs.api import (
    IngestJob,
    JobClient,
    JobState,
    Progress,
    error_from_celery_exc,
    job_id_for,
    poll_outcome,
)
from ingestq.jobs.config import Settings, redis_client
from ingestq.store.codec import info_from_json
from ingestq.store.values import Info
from ingestq.tasks.app import QUEUE, make_app
from ingestq.tasks.names import TASK_INGEST
from ingestq.tasks.records import JobRecords, error_from_record_text
from ingestq.tasks.statusboard import ActiveIngest, StatusBoard

_STATES = {
    "PENDING": JobState.QUEUED,
    "RECEIVED": JobState.QUEUED,
    "STARTED": JobState.STARTED,
    "RETRY": JobState.RETRYING,
    "SUCCESS": JobState.SUCCEEDED,
    "FAILURE": JobState.FAILED,
    "REVOKED": JobState.CANCELED,
}


class QueueJob:
    """A job on the Redis queue (the :class:`tasks.jobapi.IngestJob` protocol)."""

    def __init__(self, queue: QueueClient, job_id: str, ref: str | None = None) -> None:
        self._queue = queue
        self._id = job_id
        self._ref = ref

    @property
    def id(self) -> str:
        return self._id

    @property
    def ref(self) -> str:
        if self._ref is None:
            self._ref = self._queue.records.get(self._id).get("ref", "")
        return self._ref

    def _meta(self) -> dict[str, Any] | None:
        return self._queue.meta(self._id)

    @property
    def state(self) -> JobState:
        meta = self._meta()
        if meta is None:
            return JobState.QUEUED if self._queue.records.get(self._id) else JobState.UNKNOWN
        state = _STATES.get(str(meta.get("status")), JobState.UNKNOWN)
        if state is JobState.FAILED and isinstance(self._error(meta), errdefs.Canceled):
            return JobState.CANCELED
        return state

    @property
    def reason(self) -> str | None:
        meta = self._meta()
        if meta is None or meta.get("status") not in ("RETRY", "FAILURE", "REVOKED"):
            return None
        return str(self._error(meta))

    @property
    def progress(self) -> Progress | None:
        meta = self._meta()
        if meta is not None and meta.get("status") == "SUCCESS":
            size = int((meta.get("result") or {}).get("size", 0))
            return Progress(size, size)
        if not self.ref:
            return None
        active = self._queue.board.get(self.ref)
        return Progress(active.offset, active.total) if active is not None else None

    def _error(self, meta: Mapping[str, Any]) -> errdefs.ErrdefsError:
        status = meta.get("status")
        if status == "REVOKED":
            return errdefs.Canceled(f"job {self._id} canceled")
        if status == "FAILURE":
            stored = error_from_record_text(self._queue.records.get(self._id).get("error"))
            if stored is not None:
                return stored
        return error_from_celery_exc(meta.get("result"))

    def outcome(self) -> Info | errdefs.ErrdefsError | None:
        """The Info or the error when done, None while running."""
        meta = self._meta()
        if meta is None:
            return None
        status = meta.get("status")
        if status == "SUCCESS":
            result = meta.get("result")
            if not isinstance(result, Mapping):
                return errdefs.Unknown(f"job {self._id}: malformed result")
            try:
                return info_from_json(result)
            except errdefs.InvalidArgument as e:
                return e
        if status in ("FAILURE", "REVOKED"):
            return self._error(meta)
        return None

    def wait(self, timeout: float | None = None) -> Info:
        return poll_outcome(
            self._id,
            self.outcome,
            lambda: bool(self._queue.records.get(self._id)) or self._meta() is not None,
            Info,
            timeout,
            max_delay=0.25,
        )

    def cancel(self) -> None:
        self._queue.records.request_cancel(self._id)
        try:
            self._queue.app.control.revoke(self._id)
        except Exception as e:  # the cancel flag alone still stops the job
            raise errdefs.Unavailable(f"revoke {self._id}: {e}") from e


class QueueClient:
    """Publishes ingest jobs to workers through Redis and reads their state."""

    def __init__(self, settings: Settings) -> None:
        if not settings.queued or settings.lock_url is None or settings.result_url is None:
            raise errdefs.FailedPrecondition("QueueClient needs a Redis configuration")
        self.settings = settings
        # The producer reads results itself, so its app has no result backend: Celery
        # would otherwise subscribe to a pub/sub channel per sent task (celery#3808).
        self.app = make_app(settings, main="ingestq-producer")
        self.app.conf.result_backend = None
        self.client = redis_client(settings.lock_url, socket_timeout=10.0)
        self.result_client = (
            self.client
            if settings.result_url == settings.lock_url
            else redis_client(settings.result_url, socket_timeout=10.0)
        )
        self.records = JobRecords(self.client, settings.result_expires)
        self.board = StatusBoard(self.client, stale=max(3 * settings.heartbeat_interval, 2.0))

    def meta(self, job_id: str) -> dict[str, Any] | None:
        """Celery's raw result meta of ``job_id`` (JSON), or None."""
        try:
            raw = self.result_client.get(f"celery-task-meta-{job_id}")
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"result backend: {e}") from e
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
        except ValueError:
            return {"status": "FAILURE", "result": {"exc_type": "MalformedResult"}}
        return meta if isinstance(meta, dict) else None

    def enqueue(
        self,
        request: IngestRequest,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> QueueJob:
        """Publish ``request`` (once per job id / idempotency key). Unavailable when
        Redis cannot be reached (nothing is left recorded then)."""
        if job_id is None:
            job_id = job_id_for(idempotency_key) if idempotency_key else str(uuid.uuid4())
        fields = {
            "ref": request.ref,
            "source": source_name(request.source),
            "request": json.dumps(request.to_json()),
        }
        job_id, created = self.records.create(job_id, fields, idempotency_key)
        if not created:
            return QueueJob(self, job_id)
        try:
            self.app.send_task(TASK_INGEST, args=[request.to_json()], task_id=job_id, queue=QUEUE)
        except Exception as e:
            self._forget(job_id, idempotency_key)
            raise errdefs.Unavailable(f"publish job {job_id}: {e}") from e
        return QueueJob(self, job_id, request.ref)

    def _forget(self, job_id: str, idempotency_key: str | None) -> None:
        from ingestq.tasks import keys

        try:
            self.client.delete(keys.job_key(job_id))
            if idempotency_key:
                self.client.delete(keys.idempotency_key(idempotency_key))
        except redis.RedisError:
            pass

    def job(self, job_id: str) -> QueueJob:
        """A handle on an existing job."""
        return QueueJob(self, job_id)

    def active(self) -> list[ActiveIngest]:
        """Every live ingest on every worker."""
        return self.board.list_active()

    def close(self) -> None:
        """Close connections."""
        self.client.close()
        if self.result_client is not self.client:
            self.result_client.close()
        self.app.close()


def connect(settings: Settings | None = None) -> JobClient:
    """The job client for ``settings`` (default: the environment): a
    :class:`QueueClient` with Redis, else a :class:`tasks.embedded.LocalClient`."""
    settings = settings or Settings.from_env()
    if settings.queued:
        return QueueClient(settings)
    from ingestq.jobs.local import LocalClient

    return LocalClient(settings)


def enqueue_ingest(
    source: str | Mapping[str, Any],
    *,
    digest: str | None = None,
    size: int = 0,
    media_type: str = "application/octet-stream",
    ref: str | None = None,
    labels: Mapping[str, str] | None = None,
    job_id: str | None = None,
    idempotency_key: str | None = None,
    settings: Settings | None = None,
    client: JobClient | None = None,
) -> IngestJob:
    """Enqueue an ingest of ``source`` (a URL, a file path, or a source spec object).

    ``digest``/``size`` are the expected content (optional: without a digest the bytes
    are hashed while fetching and committed under the digest they have); ``ref``
    defaults to containerd's ref key (see :mod:`ingestq.fetch.refkey`). Returns the job handle.
    Raises InvalidArgument for a malformed digest or source; Unavailable when Redis
    cannot be reached.
    """
    spec = spec_from_text(source) if isinstance(source, str) else dict(source)
    request = make_request(
        spec, source_name(spec), digest=digest, size=size, media_type=media_type, ref=ref,
        labels=labels,
    )  # fmt: skip
    jobs = client if client is not None else connect(settings)
    return jobs.enqueue(request, job_id=job_id, idempotency_key=idempotency_key)


def get_job(
    job_id: str, settings: Settings | None = None, client: JobClient | None = None
) -> IngestJob:
    """A handle on job ``job_id`` (state ``unknown`` if there is none)."""
    jobs = client if client is not None else connect(settings)
    return jobs.job(job_id)
