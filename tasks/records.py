"""Job records in Redis: the record store of the queue (the
:class:`ingestq.jobs.records.JobRecordStore` protocol).

Celery's result meta stays the authority on a queued job's state; the record adds what
Celery does not keep: ref, source, request, the error record of a failure, a pull's
plan and its count of children still pending (``pending``), the redelivery count and
the cancel flag (the ``cancel`` field).

``ingestq:job:<id>`` is a hash of the record's fields (see :mod:`ingestq.jobs.records`),
``ingestq:idem:<key>`` maps an idempotency key to its job id. Both expire with the
job's result (``result_expires``); every write renews the record's expiry.
``ingestq:jobs`` indexes the records for listing (no KEYS, no SCAN): a zset of job ids
scored by creation time, trimmed at each create (once per batch of ``create_many``) to
the members younger than ``result_expires`` and to at most :data:`MAX_INDEXED`, and
expiring itself with the newest record.

Records read back are checked (:func:`ingestq.jobs.records.check_record`): a tampered
one is InvalidArgument naming the job.

Imports redis, errdefs, the job records' checks and this package's keys and Redis
helpers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from ingestq import errdefs
from ingestq.jobs.records import check_record
from ingestq.tasks import keys
from ingestq.tasks.lua import load
from ingestq.tasks.redisconn import decode_hash

#: The most job ids the listing index keeps (the oldest are dropped first).
MAX_INDEXED = 100_000
#: The field of a job's hash that holds its cancel flag.
CANCEL_FIELD = "cancel"
#: The field of a pull's hash that counts its children not yet succeeded.
PENDING_FIELD = "pending"


class RedisJobRecords:
    """Job records on one Redis client, expiring after ``ttl`` seconds."""

    def __init__(self, client: redis.Redis, ttl: int) -> None:
        self._client = client
        self._ttl = ttl
        self._claim = client.register_script(load("claim"))
        self._child_done = client.register_script(load("child_done"))

    def create(
        self, job_id: str, fields: Mapping[str, str], idempotency_key: str | None = None
    ) -> tuple[str, bool]:
        """See :meth:`ingestq.jobs.records.JobRecords.create`: ``SET NX`` of the
        idempotency key, then ``tasks/lua/claim.lua`` claims the job id (``HSETNX
        created_at``, the fields, the expiry and the job index in one step)."""
        try:
            if idempotency_key is not None:
                ikey = keys.idempotency_key(idempotency_key)
                if not self._client.set(ikey, job_id, nx=True, ex=self._ttl):
                    existing = self._client.get(ikey)
                    if isinstance(existing, bytes):
                        return existing.decode(), False
            args: list[str | int] = [f"{time.time():.6f}", self._ttl, job_id, MAX_INDEXED]
            args.extend(item for pair in fields.items() for item in pair)
            if not self._claim(keys=[keys.job_key(job_id), keys.JOBS], args=args):
                return job_id, False
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"job records: {e}") from e
        return job_id, True

    def create_many(self, jobs: Sequence[tuple[str, Mapping[str, str]]]) -> list[bool]:
        """Claim each ``(job id, fields)`` of ``jobs`` as :meth:`create` does without an
        idempotency key, in one pipeline (one round trip); whether each was created. The
        index is trimmed once, after the batch's claims. Unavailable when Redis cannot
        be reached."""
        if not jobs:
            return []
        now = f"{time.time():.6f}"
        try:
            pipe = self._client.pipeline(transaction=False)
            for job_id, fields in jobs:
                args: list[str | int] = [now, self._ttl, job_id, 0]
                args.extend(item for pair in fields.items() for item in pair)
                self._claim(keys=[keys.job_key(job_id), keys.JOBS], args=args, client=pipe)
            pipe.zremrangebyscore(keys.JOBS, "-inf", float(now) - self._ttl)
            pipe.zremrangebyrank(keys.JOBS, 0, -(MAX_INDEXED + 1))
            replies = pipe.execute()[: len(jobs)]
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"job records: {e}") from e
        return [bool(r) for r in replies]

    def list(self, limit: int = 1000) -> list[tuple[str, dict[str, str]]]:
        """See :meth:`ingestq.jobs.records.JobRecords.list`: the newest members of the
        index, then their records (expired or malformed ones are left out)."""
        if limit <= 0:
            return []
        try:
            members = self._client.zrevrange(keys.JOBS, 0, limit - 1)
            pipe = self._client.pipeline(transaction=False)
            ids = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
            for job_id in ids:
                pipe.hgetall(keys.job_key(job_id))
            hashes = pipe.execute() if ids else []
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"job records: {e}") from e
        out: list[tuple[str, dict[str, str]]] = []
        for job_id, raw in zip(ids, hashes, strict=True):
            if not raw:
                continue
            try:
                out.append((job_id, check_record(job_id, decode_hash(raw))))
            except errdefs.InvalidArgument:
                continue
        return out

    def _write(self, job_id: str, fields: Mapping[str, str]) -> None:
        jkey = keys.job_key(job_id)
        pipe = self._client.pipeline(transaction=True)
        mapping: dict[Any, Any] = dict(fields)
        pipe.hset(jkey, mapping=mapping)
        pipe.expire(jkey, self._ttl)
        pipe.execute()

    def get(self, job_id: str) -> dict[str, str]:
        """The record's fields (empty when unknown or expired). InvalidArgument naming
        the job for a malformed (tampered) record
        (:func:`ingestq.jobs.records.check_record`)."""
        try:
            raw = self._client.hgetall(keys.job_key(job_id))
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"job records: {e}") from e
        return check_record(job_id, decode_hash(raw))

    def update(self, job_id: str, fields: Mapping[str, str]) -> None:
        """Merge ``fields`` into the record and renew its expiry."""
        if not fields:
            return
        try:
            self._write(job_id, fields)
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"job records: {e}") from e

    def discard(self, job_id: str, idempotency_key: str | None = None) -> None:
        """Forget ``job_id`` (and its idempotency key): a job whose publishing failed.
        Best effort."""
        try:
            self._client.delete(keys.job_key(job_id))
            self._client.zrem(keys.JOBS, job_id)
            if idempotency_key:
                self._client.delete(keys.idempotency_key(idempotency_key))
        except redis.RedisError:
            return

    def discard_many(self, job_ids: Sequence[str]) -> None:
        """Forget ``job_ids`` (jobs whose publishing failed) in one pipeline. Best effort."""
        if not job_ids:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.delete(*(keys.job_key(j) for j in job_ids))
            pipe.zrem(keys.JOBS, *job_ids)
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
        """Set the ``cancel`` field the running job polls."""
        self.update(job_id, {CANCEL_FIELD: "1"})

    def cancel_flag(self, job_id: str) -> tuple[str, str]:
        """Where ``job_id``'s cancel flag lives: (hash key, field), for a script that
        reads it beside other work (:meth:`ingestq.tasks.lease.RedisLeaseLocker.guarded`)."""
        return keys.job_key(job_id), CANCEL_FIELD

    def child_succeeded(self, parent_id: str) -> int | None:
        """Count one child of pull ``parent_id`` off its ``pending`` field
        (``tasks/lua/child_done.lua``): how many are left, or None when the record has
        no such count. Unavailable when Redis cannot be reached."""
        try:
            left = self._child_done(keys=[keys.job_key(parent_id)], args=[PENDING_FIELD])
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"job records: {e}") from e
        return None if left is None else int(left)

    def claim_finalize(self, pull_id: str, ttl: float) -> bool:
        """Take pull ``pull_id``'s finalize claim for ``ttl`` seconds (``SET NX PX``):
        False when another finalize of it holds the claim. It is never given back: the
        pull's outcome is stored right after, and a finalize killed meanwhile leaves it
        to expire. Unavailable when Redis cannot be reached."""
        try:
            key = keys.finalize_claim_key(pull_id)
            return bool(self._client.set(key, "1", nx=True, px=int(ttl * 1000)))
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"job records: {e}") from e

    def cancel_requested_many(self, job_ids: Sequence[str]) -> Sequence[bool]:
        """Whether someone asked to cancel each of ``job_ids``, in one round trip (all
        False when Redis is down, as :meth:`cancel_requested`)."""
        if not job_ids:
            return []
        try:
            pipe = self._client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hexists(keys.job_key(job_id), CANCEL_FIELD)
            return [bool(v) for v in pipe.execute()]
        except redis.RedisError:
            return [False] * len(job_ids)

    def batch_done(self, batch_id: str) -> bool:
        """Whether batch message ``batch_id`` has been run to its end
        (:meth:`mark_batch_done`). Unavailable when Redis cannot be reached."""
        try:
            return bool(self._client.exists(keys.batch_done_key(batch_id)))
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"job records: {e}") from e

    def mark_batch_done(self, batch_id: str) -> None:
        """Say that batch message ``batch_id`` has been run to its end (every job ended
        or handed on); kept as long as job records. Unavailable when Redis cannot be
        reached."""
        try:
            self._client.set(keys.batch_done_key(batch_id), "1", ex=self._ttl)
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"job records: {e}") from e

    def mark_handed(self, batch_id: str, job_ids: Sequence[str]) -> None:
        """Say that the jobs ``job_ids`` of batch message ``batch_id`` went out as
        messages of their own; kept as long as job records. Unavailable when Redis
        cannot be reached."""
        if not job_ids:
            return
        key = keys.batch_handed_key(batch_id)
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.sadd(key, *job_ids)
            pipe.expire(key, self._ttl)
            pipe.execute()
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"job records: {e}") from e

    def handed(self, batch_id: str) -> set[str]:
        """The job ids :meth:`mark_handed` recorded for batch message ``batch_id``.
        Unavailable when Redis cannot be reached."""
        try:
            members = self._client.smembers(keys.batch_handed_key(batch_id))
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"job records: {e}") from e
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked to cancel ``job_id`` (False when Redis is down)."""
        try:
            return bool(self._client.hexists(keys.job_key(job_id), CANCEL_FIELD))
        except redis.RedisError:
            return False


__all__ = ["RedisJobRecords"]
