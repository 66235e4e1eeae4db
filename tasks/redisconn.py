"""Redis clients made on purpose, the one way ingestq connects to Redis outside Celery
(leases, the status board, job records, reading results), and how their hash replies
are read.

Imports redis and the job settings' URL helpers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ingestq.jobs.config import is_socket_url


def redis_client(url: str, *, socket_timeout: float) -> redis.Redis:
    """A redis-py client for ``url`` with timeouts and retries chosen on purpose.

    redis-py 8.1 defaults to a 5 s socket timeout and (for ``Redis()``) 10 retries that
    can replay writes. Lease and status scripts are not idempotent under replay (a
    replayed acquire would look like someone else's lock), so: no retries, an explicit
    ``socket_timeout`` (callers pass well under the lease TTL / 3 for heartbeats), a 5 s
    connect timeout, TCP keepalive (not on a ``unix://`` socket) and a health check.
    ``rediss://`` URLs get TLS and URL passwords/usernames are honoured by ``from_url``.
    """
    # TCP keepalive has no meaning on a unix socket, whose connection refuses it.
    keepalive = {} if is_socket_url(url) else {"socket_keepalive": True}
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(socket_timeout, 5.0),
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
        **keepalive,
    )


def decode_hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A Redis hash reply (bytes or str keys and values) as str to str."""

    def text(v: object) -> str:
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    return {text(k): text(v) for k, v in raw.items()}


__all__ = ["decode_hash", "redis_client"]
