"""Job records in Redis: what a producer enqueued (ref, source, request), the error
record of a failed job, and the cancel flag. Celery's result meta stays the authority
on a job's state; the record adds what Celery does not keep.

``ingestq:job:<id>`` is a hash with ``ref``, ``source``, ``request`` (JSON),
``created_at``, and later ``error`` (an errdefs error record, JSON) and ``cancel``.
It expires with the job's result (``result_expires``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import redis

from ingestq import errdefs
from ingestq.tasks import keys
from ingestq.tasks.lease import decode_hash


class JobRecords:
    """Reads and writes job records on one Redis client."""

    def __init__(self, client: redis.Redis, ttl: int) -> None:
        self._client = client
        self._ttl = ttl

    def create(
        self, job_id: str, fields: Mapping[str, str], idempotency_key: str | None = None
    ) -> tuple[str, bool]:
        """Record a new job; returns ``(job id, created)``.

        When ``idempotency_key`` was used before (within the TTL) or ``job_id`` already
        has a record, nothing is written and the existing job id is returned with
        ``created=False``: the caller must not publish again.
        """
        try:
            if idempotency_key is not None:
                ikey = keys.idempotency_key(idempotency_key)
                if not self._client.set(ikey, job_id, nx=True, ex=self._ttl):
                    existing = self._client.get(ikey)
                    if isinstance(existing, bytes):
                        return existing.decode(), False
            jkey = keys.job_key(job_id)
            if not self._client.hsetnx(jkey, "created_at", f"{time.time():.6f}"):
                return job_id, False
            pipe = self._client.pipeline(transaction=True)
            mapping: dict[Any, Any] = dict(fields)
            pipe.hset(jkey, mapping=mapping)
            pipe.expire(jkey, self._ttl)
            pipe.execute()
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"job records: {e}") from e
        return job_id, True

    def get(self, job_id: str) -> dict[str, str]:
        """The record's fields (empty when unknown or expired)."""
        try:
            raw = self._client.hgetall(keys.job_key(job_id))
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"job records: {e}") from e
        return decode_hash(raw)

    def set_error(self, job_id: str, err: BaseException) -> None:
        """Store ``err``'s errdefs error record. Best effort (the Celery meta still has
        the exception)."""
        record = json.dumps(errdefs.to_json_dict(err), separators=(",", ":"))
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(keys.job_key(job_id), "error", record)
            pipe.expire(keys.job_key(job_id), self._ttl)
            pipe.execute()
        except redis.RedisError:
            return

    def count_redelivery(self, job_id: str) -> int:
        """Count one more redelivery of ``job_id`` (its worker was lost); the total."""
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.hincrby(keys.job_key(job_id), "redeliveries", 1)
            pipe.expire(keys.job_key(job_id), self._ttl)
            count, _ = pipe.execute()
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"job records: {e}") from e
        return int(count)

    def request_cancel(self, job_id: str) -> None:
        """Set the cancel flag the running job polls."""
        try:
            self._client.hset(keys.job_key(job_id), "cancel", "1")
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"job records: {e}") from e

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked to cancel ``job_id``."""
        try:
            return self._client.hget(keys.job_key(job_id), "cancel") is not None
        except redis.RedisError:
            return False


def error_from_record_text(text: str | None) -> errdefs.ErrdefsError | None:
    """The errdefs error of a stored record, or None when absent or unreadable. Only ever
    constructs a registered errdefs kind."""
    if not text:
        return None
    try:
        obj: Any = json.loads(text)
        return errdefs.from_json_dict(obj)
    except (ValueError, errdefs.InvalidArgument):
        return None
