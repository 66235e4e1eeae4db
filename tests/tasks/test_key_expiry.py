"""No Redis key ingestq writes lives forever: after a burst of jobs through a real
worker, every key but the queues' own has a TTL or is gone. Fences still only grow."""

from __future__ import annotations

import os
from pathlib import Path

import redis

from ingestq import errdefs
from ingestq.tasks import keys
from ingestq.tasks.app import QUEUE
from ingestq.tasks.client import enqueue_ingest
from ingestq.tasks.lease import FENCE_TTL, RedisLeaseLocker
from ingestq.tasks.sweeper import SWEEPER_REF
from tests.servers.util import wait_until
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.conftest import ClusterFactory

#: kombu's own keys for the queue: the list, its priority siblings, the bindings and the
#: unacked hash and index (entries removed by acks, restored by the visibility timeout).
QUEUE_KEYS = (QUEUE, "_kombu.binding", "unacked")


def is_queue_key(name: str) -> bool:
    return name.startswith(QUEUE_KEYS) and not name.startswith(f"{keys.PREFIX}:")


def test_every_key_but_the_queues_has_a_ttl_after_a_burst_of_jobs(
    cluster_factory: ClusterFactory, redis_url: str, store_root: Path, blob_server: BlobServer
) -> None:
    cluster = cluster_factory(redis_url, store_root, INGESTQ_SWEEP_INTERVAL="1")
    worker = cluster.start_worker(concurrency=2)
    blobs = [Behaviour(data=os.urandom(256 << 10)) for _ in range(12)]
    urls = [blob_server.add(f"/b{i}", b) for i, b in enumerate(blobs)]
    jobs = [
        enqueue_ingest(url, digest=b.digest, size=len(b.data), client=cluster.client,
                       idempotency_key=f"burst-{i}-{n}")
        for n in range(2)  # each digest twice: lock waits and dedupe too
        for i, (url, b) in enumerate(zip(urls, blobs, strict=True))
    ]  # fmt: skip
    missing = blob_server.add("/missing", Behaviour(status=404))
    failed = enqueue_ingest(missing, client=cluster.client)
    for job, b in zip(jobs, blobs * 2, strict=True):
        assert str(job.wait(timeout=120).digest) == b.digest, cluster.logs()
    try:
        failed.wait(timeout=60)
        raise AssertionError("a 404 succeeded")
    except errdefs.NotFound:
        pass

    wait_until(lambda: "sweeps for dead" in worker.log_text(), 20, "the sweeper holds its lease")

    r = redis.Redis.from_url(cluster.redis_url)
    names = [k.decode() for k in r.scan_iter(count=1000)]
    assert any(n.startswith(f"{keys.PREFIX}:fence:") for n in names), names
    assert r.exists(keys.ref_keys(SWEEPER_REF).lease)
    forever = [n for n in names if not is_queue_key(n) and r.pttl(n) == -1]
    assert forever == [], forever
    fence_ttls = [r.pttl(n) for n in names if n.startswith(f"{keys.PREFIX}:fence:")]
    assert all(0 < t <= FENCE_TTL * 1000 for t in fence_ttls), fence_ttls


def test_fences_keep_growing_after_the_fence_key_expired(redis_url: str) -> None:
    locker = RedisLeaseLocker(redis_url, ttl=1.5)
    r = redis.Redis.from_url(redis_url)
    fence_key = keys.ref_keys("ref-x").fence
    first = locker.try_lock("ref-x", "me")
    first.release()
    assert 0 < r.pttl(fence_key) <= locker.fence_ttl_ms
    r.delete(fence_key)  # what its expiry does
    second = locker.try_lock("ref-x", "me")
    second.release()
    assert second.fence > first.fence
    r.set(fence_key, str(second.fence + 10**9))  # a clock that went back: the key wins
    third = locker.try_lock("ref-x", "me")
    third.release()
    assert third.fence == second.fence + 10**9 + 1


def test_a_live_writes_keys_all_expire_by_themselves(redis_url: str) -> None:
    locker = RedisLeaseLocker(redis_url, ttl=1.5)
    r = redis.Redis.from_url(redis_url)
    lease = locker.try_lock("ref-live", "me")
    lease.progress.publish = True
    k = lease.keys
    wait_until(lambda: r.exists(k.status), 5, "status published")
    ttls = {name: r.pttl(name) for name in (k.lease, k.fence, k.holder, k.status, keys.ACTIVE)}
    assert all(t > 0 for t in ttls.values()), ttls
    lease.release()
    assert r.exists(k.lease, k.holder, k.status, keys.ACTIVE) == 0
