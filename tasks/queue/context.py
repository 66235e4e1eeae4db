"""What every queued job handle shares: the producer's Celery app, the job records,
Celery's results and the status board (one set of Redis connections per client).

Imports celery, errdefs and this package's Redis adapters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from celery import Celery

from ingestq import errdefs
from ingestq.jobs.api import check_same_request
from ingestq.tasks.records import RedisJobRecords
from ingestq.tasks.results import CeleryResults
from ingestq.tasks.statusboard import StatusBoard


@dataclass(frozen=True)
class Message:
    """A Celery message to publish: ``task(*args, **kwargs)`` under ``task_id``,
    carrying the jobs ``job_ids`` (one, or a batch's)."""

    task: str
    task_id: str
    args: list[object]
    kwargs: dict[str, object]
    job_ids: tuple[str, ...]


@dataclass(frozen=True)
class QueueContext:
    """The connections of one :class:`ingestq.tasks.queue.QueueClient`."""

    app: Celery
    records: RedisJobRecords
    results: CeleryResults
    board: StatusBoard

    def publish(
        self,
        task: str,
        args: list[object],
        job_id: str,
        fields: dict[str, str],
        idempotency_key: str | None,
        queue: str,
        kwargs: dict[str, object] | None = None,
    ) -> tuple[str, bool]:
        """Record job ``job_id`` and publish ``task(*args, **kwargs)`` as it, once per id /
        idempotency key; returns ``(job id, published)`` (an existing job's id, and
        False, when the key or id was used before; FailedPrecondition when the key's
        job was for another request). Unavailable when Redis cannot be reached (nothing
        is left recorded then)."""
        job_id, created = self.records.create(job_id, fields, idempotency_key)
        if not created:
            if idempotency_key:
                check_same_request(idempotency_key, job_id, self.records.get(job_id), fields)
            return job_id, False
        try:
            self.app.send_task(task, args=args, kwargs=kwargs or {}, task_id=job_id,
                               queue=queue)  # fmt: skip
        except Exception as e:
            self.records.discard(job_id, idempotency_key)
            raise errdefs.Unavailable(f"publish job {job_id}: {e}") from e
        return job_id, True

    def publish_many(
        self,
        jobs: Sequence[tuple[str, dict[str, str]]],
        messages: Sequence[Message],
        queue: str,
    ) -> None:
        """Record each ``(job id, fields)`` of ``jobs`` (fresh ids, no idempotency key) in
        one Redis pipeline, then publish ``messages`` (which carry those jobs) through one
        producer connection. Unavailable when Redis cannot be reached or an id is taken;
        the jobs of the messages not published by then are left unrecorded (those
        published before run)."""
        created = self.records.create_many(jobs)
        if not all(created):
            self.records.discard_many([j for (j, _), c in zip(jobs, created, strict=True) if c])
            raise errdefs.Unavailable(f"publish {len(jobs)} jobs: a job id is taken")
        done = 0
        try:
            with self.app.producer_or_acquire() as producer:
                for m in messages:
                    self.app.send_task(m.task, args=m.args, kwargs=m.kwargs, task_id=m.task_id,
                                       queue=queue, producer=producer)  # fmt: skip
                    done += 1
        except Exception as e:
            self.records.discard_many([j for m in messages[done:] for j in m.job_ids])
            raise errdefs.Unavailable(
                f"publish jobs: {e} ({done} of {len(messages)} messages published)"
            ) from e

    def revoke(self, job_ids: list[str]) -> None:
        """Flag ``job_ids`` for cancellation and revoke their messages. Unavailable when
        the revoke cannot be broadcast (the flags alone still stop the jobs)."""
        for job_id in job_ids:
            self.records.request_cancel(job_id)
        try:
            self.app.control.revoke(job_ids if len(job_ids) > 1 else job_ids[0])
        except Exception as e:
            raise errdefs.Unavailable(f"revoke {job_ids[0]}: {e}") from e


__all__ = ["Message", "QueueContext"]
