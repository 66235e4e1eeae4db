"""Reading Celery's task results straight from Redis: the one reader of the result keys
(``celery-task-meta-<id>``, :func:`ingestq.tasks.keys.result_key`), for producers and
for the pull finalize task alike.

The meta is plain JSON; it is read as data and never handed to Celery, so Celery never
rebuilds an exception from it (errors are decoded by :mod:`ingestq.tasks.codec`).

Imports redis, errdefs, the job interface's states and this package's keys.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from ingestq import errdefs
from ingestq.jobs.api import JobState
from ingestq.tasks import keys

#: Celery's task states as job states.
STATES = {
    "PENDING": JobState.QUEUED,
    "RECEIVED": JobState.QUEUED,
    "STARTED": JobState.STARTED,
    "RETRY": JobState.RETRYING,
    "SUCCESS": JobState.SUCCEEDED,
    "FAILURE": JobState.FAILED,
    "REVOKED": JobState.CANCELED,
}

#: What a result that is not a JSON object reads as: a failure of no errdefs kind.
MALFORMED: dict[str, Any] = {"status": "FAILURE", "result": {"exc_type": "MalformedResult"}}


class CeleryResults:
    """Reads result metas on one Redis client (the result backend's)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def meta(self, job_id: str) -> dict[str, Any] | None:
        """Celery's result meta of ``job_id``, or None while there is none. A meta
        that is not a JSON object reads as :data:`MALFORMED`. Unavailable when Redis
        cannot be reached."""
        try:
            raw = self._client.get(keys.result_key(job_id))
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"result backend: {e}") from e
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
        except ValueError:
            return dict(MALFORMED)
        return meta if isinstance(meta, dict) else dict(MALFORMED)


def state_of(meta: dict[str, Any]) -> JobState:
    """The job state a meta shows (``unknown`` for a status Celery does not define)."""
    return STATES.get(str(meta.get("status")), JobState.UNKNOWN)


__all__ = ["MALFORMED", "STATES", "CeleryResults", "state_of"]
