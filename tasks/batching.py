"""Which queued ingest jobs travel together, and the batch message's shape.

``enqueue_many`` puts up to ``INGESTQ_BATCH_JOBS`` (default and ceiling
:data:`BATCH_JOBS`; 0 or 1 turns batches off) small local-file jobs in one Celery
message (``ingestq.ingest.batch``, :mod:`ingestq.tasks.batch_task`): thousands of 4 KiB
files then cost the workers one delivery, one dispatch to a pool process and one ack
per batch instead of per job, and their results are written in one round trip. Each
job keeps its own id, record, cancel flag, result and errdefs kind; only the message is
shared. A job of a batch is one that is done in milliseconds (:func:`batchable`), so it
holds the jobs after it up for no longer than a job of their own would wait in the queue.

Imports errdefs, the ingest request and the job settings' ceiling only: both the
producer and the worker use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ingestq import errdefs
from ingestq.ingest.request import IngestRequest
from ingestq.jobs.config import MAX_BATCH_JOBS

#: The most jobs one batch message carries.
BATCH_JOBS = MAX_BATCH_JOBS
#: The largest declared size of a job that may run inside a batch, bytes.
BATCH_BLOB_MAX = 1 << 20
#: The message header of a job that a batch handed on as a message of its own (the
#: batch's id, or ``gathered``): a worker runs it alone, never gathered again.
HANDED_ON_HEADER = "ingestq_handed_on"


def batchable(request: IngestRequest) -> bool:
    """True when ``request`` may run inside a batch: a local file (source type ``file``)
    of declared size 1 to :data:`BATCH_BLOB_MAX` bytes, which reads no network and
    takes no lease."""
    return request.source.get("type") == "file" and 0 < request.size <= BATCH_BLOB_MAX


@dataclass(frozen=True)
class BatchEntry:
    """One job of a batch message: its id, its request (JSON, as the ingest task's
    argument) and its bound on source retries (None: the worker's setting)."""

    job_id: str
    request: Mapping[str, Any]
    max_source_retries: int | None = None

    def task_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of this job's ``ingestq.ingest`` message of its own
        (its bound on source retries, when it has one)."""
        if self.max_source_retries is None:
            return {}
        return {"max_source_retries": self.max_source_retries}

    def to_json(self) -> dict[str, Any]:
        """The entry as it travels in the message."""
        return {"id": self.job_id, "request": dict(self.request), **self.task_kwargs()}


def parse_entries(jobs: object) -> list[BatchEntry]:
    """The entries of a batch message's ``jobs`` argument: a list of at most
    :data:`BATCH_JOBS` objects, each with its own non-empty string ``id``, an object
    ``request`` and an optional non-negative integer ``max_source_retries``.
    InvalidArgument naming the first malformed entry (or a list too long, or an id
    twice); the requests themselves are checked when each job runs."""
    if not isinstance(jobs, list):
        raise errdefs.InvalidArgument("batch message: jobs is not a list")
    if len(jobs) > BATCH_JOBS:
        raise errdefs.InvalidArgument(
            f"batch message: {len(jobs)} jobs, more than {BATCH_JOBS} in one message"
        )
    out: list[BatchEntry] = []
    seen: set[str] = set()
    for i, job in enumerate(jobs):
        if not isinstance(job, Mapping):
            raise errdefs.InvalidArgument(f"batch message: job {i} is not an object")
        job_id, request, retries = job.get("id"), job.get("request"), job.get("max_source_retries")
        if not isinstance(job_id, str) or not job_id:
            raise errdefs.InvalidArgument(f"batch message: job {i} has no id")
        if job_id in seen:
            raise errdefs.InvalidArgument(f"batch message: job {job_id} is in it twice")
        seen.add(job_id)
        if not isinstance(request, Mapping):
            raise errdefs.InvalidArgument(f"batch message: job {job_id} has no request object")
        if retries is not None and (
            not isinstance(retries, int) or isinstance(retries, bool) or retries < 0
        ):
            raise errdefs.InvalidArgument(
                f"batch message: job {job_id}: max_source_retries must be an integer >= 0"
            )
        out.append(BatchEntry(job_id, request, retries))
    return out


__all__ = ["BATCH_BLOB_MAX", "BATCH_JOBS", "BatchEntry", "batchable", "parse_entries"]
