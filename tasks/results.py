"""Reading Celery's task results straight from Redis: the one reader of the result keys
(``celery-task-meta-<id>``, :func:`ingestq.tasks.keys.result_key`), for producers and
for the pull finalize task alike.

The meta is plain JSON; it is read as data and never handed to Celery, so Celery never
rebuilds an exception from it (errors are decoded by :mod:`ingestq.tasks.codec`). It is
untrusted: decoding is bounded (:func:`ingestq.jobs.records.load_json`) and total, and a
malformed meta is InvalidArgument naming the job.

Imports redis, errdefs, the job interface's states and records, and this package's keys.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from ingestq import errdefs
from ingestq.jobs.api import JobState
from ingestq.jobs.records import load_json
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

#: The statuses whose ``result`` is an object: the return value (SUCCESS) or Celery's
#: stored exception (FAILURE, RETRY).
_OBJECT_RESULTS = frozenset({"SUCCESS", "FAILURE", "RETRY"})
_EXCEPTIONS = frozenset({"FAILURE", "RETRY"})


def check_meta(job_id: str, meta: object) -> dict[str, Any]:
    """``meta`` as a result meta whose fields have their types: a JSON object with a
    string ``status``; for SUCCESS, FAILURE and RETRY an object ``result``; for FAILURE
    and RETRY, Celery's exception fields (``exc_type`` a string, ``exc_module`` a string
    or null, ``exc_message`` a list, a string or null). InvalidArgument ``job <id>:
    malformed result record: ...`` otherwise."""
    what = f"job {job_id}: malformed result record"
    if not isinstance(meta, dict):
        raise errdefs.InvalidArgument(f"{what}: not an object")
    status = meta.get("status")
    if not isinstance(status, str):
        raise errdefs.InvalidArgument(f"{what}: status is not a string")
    result = meta.get("result")
    if status in _OBJECT_RESULTS and not isinstance(result, Mapping):
        raise errdefs.InvalidArgument(f"{what}: {status} result is not an object")
    if status in _EXCEPTIONS and isinstance(result, Mapping):
        exc_type, module = result.get("exc_type"), result.get("exc_module")
        if not isinstance(exc_type, str):
            raise errdefs.InvalidArgument(f"{what}: exc_type is not a string")
        if module is not None and not isinstance(module, str):
            raise errdefs.InvalidArgument(f"{what}: exc_module is not a string")
        if not isinstance(result.get("exc_message"), list | str | None):
            raise errdefs.InvalidArgument(f"{what}: exc_message is not a list")
    return meta


class CeleryResults:
    """Reads result metas on one Redis client (the result backend's)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def meta(self, job_id: str) -> dict[str, Any] | None:
        """Celery's result meta of ``job_id``, or None while there is none.
        InvalidArgument naming the job when the stored meta is too large, too deep, not
        JSON or malformed (:func:`check_meta`); Unavailable when Redis cannot be
        reached."""
        try:
            raw = self._client.get(keys.result_key(job_id))
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"result backend: {e}") from e
        return _decoded(job_id, raw)

    def ended(self, job_ids: Sequence[str]) -> set[str]:
        """The jobs of ``job_ids`` whose stored meta shows a final state (SUCCESS, FAILURE
        or REVOKED), read in one round trip (a malformed meta counts as not ended).
        Unavailable when Redis cannot be reached."""
        if not job_ids:
            return set()
        try:
            raws = self._client.mget([keys.result_key(j) for j in job_ids])
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"result backend: {e}") from e
        out = set()
        for job_id, raw in zip(job_ids, raws, strict=True):
            with contextlib.suppress(errdefs.InvalidArgument):
                meta = _decoded(job_id, raw)
                if meta is not None and state_of(meta).done:
                    out.add(job_id)
        return out

    def watch(self, job_id: str) -> MetaWatch:
        """A :class:`MetaWatch` of ``job_id``'s result channel (close it when done)."""
        return MetaWatch(self._client, job_id)


class MetaWatch:
    """A subscription to one job's result channel: Celery's Redis backend publishes every
    meta it stores (STARTED, RETRY, SUCCESS, FAILURE, REVOKED) on the meta's key, so
    :meth:`sleep` returns as soon as the job's state changes instead of at the end of its
    pause. Subscribed before the constructor returns, so a meta stored after it is never
    missed. A Redis failure (or a backend that cannot subscribe) turns it into a plain
    sleep; it never raises. Close it (or use it as a context manager) to drop the
    subscription."""

    def __init__(self, client: redis.Redis, job_id: str) -> None:
        self._pubsub: Any = None
        pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(keys.result_key(job_id))
            # The confirmation: the server has taken the subscription.
            pubsub.get_message(timeout=1.0)
            self._pubsub = pubsub
        except (redis.RedisError, OSError):
            self._close(pubsub)

    def sleep(self, seconds: float) -> None:
        """Wait up to ``seconds``, less when a new meta of the job is stored meanwhile."""
        deadline = time.monotonic() + seconds
        while self._pubsub is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                message = self._pubsub.get_message(timeout=left)
            except (redis.RedisError, OSError, ValueError):
                self._close(self._pubsub)
                break
            if message is not None and message.get("type") in ("message", b"message"):
                return
        left = deadline - time.monotonic()
        if left > 0:
            time.sleep(left)

    def _close(self, pubsub: Any) -> None:
        self._pubsub = None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()

    def close(self) -> None:
        """Drop the subscription (idempotent)."""
        self._close(self._pubsub)

    def __enter__(self) -> MetaWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decoded(job_id: str, raw: object) -> dict[str, Any] | None:
    """The meta stored as ``raw`` (None: none stored), checked (:func:`check_meta`);
    InvalidArgument naming the job when it is malformed."""
    if raw is None:
        return None
    if not isinstance(raw, bytes | str):
        raise errdefs.InvalidArgument(f"job {job_id}: malformed result record")
    return check_meta(job_id, load_json(raw, f"job {job_id}: malformed result record"))


def state_of(meta: dict[str, Any]) -> JobState:
    """The job state a meta shows (``unknown`` for a status Celery does not define)."""
    return STATES.get(str(meta.get("status")), JobState.UNKNOWN)


__all__ = ["STATES", "CeleryResults", "MetaWatch", "check_meta", "state_of"]
