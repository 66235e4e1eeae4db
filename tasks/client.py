"""The producer API: connect to a job backend, enqueue ingests and pulls, and find them.

>>> job = enqueue_ingest("https://example.com/blob", digest="sha256:...", size=1234)
>>> info = job.wait(timeout=600)        # the blob's Info, or raises its errdefs error

:func:`connect` picks the backend from the settings: with Redis configured
(``INGESTQ_REDIS_URL`` ...) jobs are Celery messages drained by workers
(:class:`ingestq.tasks.queue.QueueClient`); without it the same ingest core runs in this
process (:class:`ingestq.jobs.local.LocalClient`). Everything else goes through the
:class:`ingestq.jobs.api.JobClient` protocol, whichever backend and job kind.

Job ids: pass ``job_id`` to choose one, or ``idempotency_key`` to derive one
(``uuid5``) and guard publishing: enqueueing twice with the same key or id returns the
first job and starts nothing (Celery itself does not deduplicate ids). Use a key per
request: a finished job keeps its result until it expires.

These are the names ``ingestq`` exports (``from ingestq import enqueue_ingest``).
This module sits where it can see both backends; ``ingestq.jobs`` never imports it.
It imports Celery, kombu and redis only when :func:`connect` picks the queue, so an
in-process ingest starts without them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from ingestq import errdefs
from ingestq.fetch.registry.options import RegistryOptions
from ingestq.images.request import PullRequest
from ingestq.ingest.request import IngestRequest
from ingestq.jobs.api import IngestJob, JobClient, PullJob
from ingestq.jobs.config import Settings
from ingestq.jobs.ingest import ingest_request
from ingestq.jobs.pull import pull_request


def connect(settings: Settings | None = None) -> JobClient:
    """The job client for ``settings`` (default: the environment): a
    :class:`QueueClient` with Redis, else a :class:`LocalClient`. FailedPrecondition
    for an incomplete Redis configuration."""
    settings = settings or Settings.from_env()
    if settings.queued:
        from ingestq.tasks.queue import QueueClient  # Celery, kombu, redis: queue only

        return QueueClient(settings)
    from ingestq.jobs.local import LocalClient  # the store and the ingest core: in process only

    return LocalClient(settings)


def enqueue_ingest(
    source: str | Mapping[str, Any],
    *,
    digest: str | None = None,
    size: int = 0,
    media_type: str = "application/octet-stream",
    ref: str | None = None,
    labels: Mapping[str, str] | None = None,
    expire: timedelta | str | None = None,
    job_id: str | None = None,
    idempotency_key: str | None = None,
    settings: Settings | None = None,
    client: JobClient | None = None,
    retries: int | None = None,
) -> IngestJob:
    """Enqueue an ingest of ``source`` (a URL, a file path, or a source spec object)
    on ``client`` (default: :func:`connect` of ``settings``).

    ``digest``/``size`` are the expected content (optional: without a digest the bytes
    are hashed while fetching and committed under the digest they have); ``ref``
    defaults to containerd's ref key (see :mod:`ingestq.fetch.refkey`). gc keeps the
    blob, or with ``expire`` (a timedelta or ``30s``, ``10m``, ``7d``) until then.
    ``retries`` bounds the retries of an Unavailable source for this job (default:
    ``INGESTQ_MAX_SOURCE_RETRIES``). Returns the job handle. Raises InvalidArgument for
    a malformed digest, source or duration or a negative ``retries``; Unavailable when
    Redis cannot be reached.
    """
    request = ingest_request(
        source, digest=digest, size=size, media_type=media_type, ref=ref, labels=labels,
        expire=expire,
    )  # fmt: skip
    jobs = client if client is not None else connect(settings)
    return jobs.submit_ingest(
        request, job_id=job_id, idempotency_key=idempotency_key, retries=retries
    )


def enqueue_many(
    requests: Iterable[IngestRequest | str | Mapping[str, Any]],
    *,
    settings: Settings | None = None,
    client: JobClient | None = None,
    retries: int | None = None,
) -> list[IngestJob]:
    """Enqueue many ingests in one call on ``client`` (default: :func:`connect` of
    ``settings``): on the queue the job records go in one Redis pipeline and the
    messages through one producer connection. Each request is an
    :class:`~ingestq.ingest.request.IngestRequest`, a source alone (a URL or file
    path, as :func:`enqueue_ingest`'s first argument) or a mapping of
    :func:`enqueue_ingest`'s request arguments (``source`` required; ``digest``,
    ``size``, ``media_type``, ``ref``, ``labels``, ``expire``). Each job gets a fresh
    id (use :func:`enqueue_ingest` for idempotency keys). Returns the job handles in
    order. Raises InvalidArgument for a malformed request (before anything is
    published) or a negative ``retries``; Unavailable when Redis cannot be reached (the
    jobs not published by then are left unrecorded).
    """
    built = [_built_request(r) for r in requests]
    jobs = client if client is not None else connect(settings)
    return list(jobs.submit_ingests(built, retries=retries))


_REQUEST_ARGS = frozenset({"source", "digest", "size", "media_type", "ref", "labels", "expire"})


def _built_request(r: object) -> IngestRequest:
    if isinstance(r, IngestRequest):
        return r
    if isinstance(r, str):
        return ingest_request(r)
    if isinstance(r, Mapping):
        return ingest_request(**_request_args(r))
    raise errdefs.InvalidArgument(
        f"ingest request {r!r}: not an IngestRequest, a source or a mapping of arguments"
    )


def _request_args(r: Mapping[str, Any]) -> dict[str, Any]:
    """``r`` checked as :func:`enqueue_ingest`'s request arguments."""
    unknown = set(r) - _REQUEST_ARGS
    if unknown or "source" not in r:
        raise errdefs.InvalidArgument(
            f"ingest request {dict(r)!r}: needs 'source'"
            + (f", unknown {sorted(unknown)}" if unknown else "")
        )
    return dict(r)


def enqueue_pull(
    reference: str | PullRequest,
    *,
    platforms: Sequence[str] = (),
    all_platforms: bool = False,
    options: RegistryOptions | None = None,
    name: str | None = None,
    job_id: str | None = None,
    idempotency_key: str | None = None,
    retries: int | None = None,
    settings: Settings | None = None,
    client: JobClient | None = None,
) -> PullJob:
    """Start a pull of ``reference`` (or a full :class:`PullRequest`) on ``client``
    (default: :func:`connect` of ``settings``).

    With Redis configured the pull is queued for workers; otherwise it runs in this
    process. Without ``platforms`` (and ``all_platforms``) the platform of this host is
    pulled, wherever the pull runs. ``job_id`` / ``idempotency_key`` work as for
    ingests: the same id or key returns the first job and starts nothing. ``retries``
    bounds the retries of an Unavailable source, for the planning and for each blob
    (default: ``INGESTQ_MAX_SOURCE_RETRIES``).

    Raises InvalidArgument for a malformed reference or platform or a negative
    ``retries``, Unavailable when
    Redis cannot be reached. Failures of the pull itself come from :meth:`PullJob.wait`.
    """
    request = pull_request(
        reference, platforms=platforms, all_platforms=all_platforms, options=options, name=name
    )
    jobs = client if client is not None else connect(settings)
    return jobs.submit_pull(
        request, job_id=job_id, idempotency_key=idempotency_key, retries=retries
    )


def get_job(
    job_id: str, settings: Settings | None = None, client: JobClient | None = None
) -> IngestJob:
    """A handle on ingest job ``job_id`` (state ``unknown`` if there is none)."""
    jobs = client if client is not None else connect(settings)
    return jobs.job(job_id)


def get_pull(
    job_id: str, settings: Settings | None = None, client: JobClient | None = None
) -> PullJob:
    """A handle on pull job ``job_id`` (state ``unknown`` if there is none)."""
    jobs = client if client is not None else connect(settings)
    return jobs.pull(job_id)


__all__ = ["connect", "enqueue_ingest", "enqueue_many", "enqueue_pull", "get_job", "get_pull"]
