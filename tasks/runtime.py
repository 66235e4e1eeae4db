"""What a worker process needs to run tasks, made once per process (after the pool
fork): the settings, the store with the Redis lease locker, the job records and
Celery's results.

Imports redis, errdefs, the job settings and this package's Redis adapters and app.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import redis

from ingestq import errdefs
from ingestq.jobs.config import Settings, open_store
from ingestq.s3 import S3Store
from ingestq.store.local import LocalStore
from ingestq.tasks.app import app, settings_of
from ingestq.tasks.lease import RedisLeaseLocker
from ingestq.tasks.records import RedisJobRecords
from ingestq.tasks.redisconn import redis_client
from ingestq.tasks.results import CeleryResults

#: Socket timeout of the worker's Redis clients, seconds.
SOCKET_TIMEOUT = 10.0


@dataclass
class Runtime:
    """A worker process's store, lease locker, Redis clients, records and results."""

    settings: Settings
    store: LocalStore | S3Store
    locker: RedisLeaseLocker
    client: redis.Redis
    records: RedisJobRecords
    results: CeleryResults


_runtime: Runtime | None = None
_runtime_pid = -1
_runtime_mutex = threading.Lock()


def make_runtime(settings: Settings) -> Runtime:
    """A Runtime for ``settings`` (no network yet: clients connect on first use).
    FailedPrecondition when no Redis is configured; the store's errors when it cannot be
    opened; InvalidArgument for a bad lease ttl or Redis URL option."""
    if settings.lock_url is None:
        raise errdefs.FailedPrecondition("no Redis configured for leases")
    locker = RedisLeaseLocker(settings.lock_url, settings.lease_ttl)
    store = open_store(settings, [locker])
    client = redis_client(settings.lock_url, socket_timeout=SOCKET_TIMEOUT)
    result_url = settings.result_url or settings.lock_url
    results_client = (
        client
        if result_url == settings.lock_url
        else redis_client(result_url, socket_timeout=SOCKET_TIMEOUT)
    )
    records = RedisJobRecords(client, settings.result_expires)
    return Runtime(settings, store, locker, client, records, CeleryResults(results_client))


def runtime() -> Runtime:
    """This process's Runtime (made on first use in each process). FailedPrecondition
    when no Redis is configured."""
    global _runtime, _runtime_pid
    with _runtime_mutex:
        if _runtime is None or _runtime_pid != os.getpid():
            _runtime = make_runtime(settings_of(app))
            _runtime_pid = os.getpid()
        return _runtime


__all__ = ["Runtime", "make_runtime", "runtime"]
