"""A Redis with a password reached over a unix socket only
(``unix://:PASSWORD@/PATH.sock?db=N``, its TCP port closed): a worker, the producer,
the broker, the result backend and the leases all use it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from ingestq.tasks.lease import RedisLeaseLocker
from tests.servers.redis_server import RedisFactory, redis_with_socket
from tests.tasks.conftest import ClusterFactory

PASSWORD = "p@ss%word"


@pytest.fixture
def socket_url(redis_factory: RedisFactory) -> Iterator[tuple[str, Path]]:
    """A Redis with a password, reached by its socket only; the URL (db 2) and the
    socket's path."""
    with redis_with_socket(redis_factory) as (server, sock):
        plain = redis.Redis.from_url(server.url)
        plain.config_set("requirepass", PASSWORD)
        plain.config_set("port", "0")  # the socket only
        yield f"unix://:{quote(PASSWORD, safe='')}@{sock}?db=2", sock


def _db(sock: Path, n: int) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(sock), db=n, password=PASSWORD)


def test_a_worker_and_producer_over_a_redis_socket(
    socket_url: tuple[str, Path], cluster_factory: ClusterFactory, store_root: Path
) -> None:
    url, sock = socket_url
    cluster = cluster_factory(url, store_root)
    cluster.start_worker()
    job_id = cluster.ingest_a_file()
    # Everything lives in db 2 of the socket's server: the queue's binding (kombu's
    # broker), the result, the job's record.
    assert _db(sock, 2).exists("_kombu.binding.ingestq")
    assert _db(sock, 2).exists(f"celery-task-meta-{job_id}")
    assert _db(sock, 0).dbsize() == 0


def test_leases_over_a_redis_socket(socket_url: tuple[str, Path]) -> None:
    url, sock = socket_url
    locker = RedisLeaseLocker(url, ttl=5)
    lease = locker.try_lock("ref-sock", "me")
    holder = locker.holder("ref-sock")
    assert holder is not None and holder.fence == lease.fence
    assert _db(sock, 2).dbsize() > 0
    lease.release()
    assert locker.holder("ref-sock") is None
