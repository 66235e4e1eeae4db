"""The worker's ingest-core subscribers: the write's status fed to the Redis lease
heartbeat, a stolen lease turning a failure into a retry, and the prometheus counters."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import redis

from ingestq import errdefs
from ingestq.ingest.attempt import CHUNK, ingest_once
from ingestq.ingest.hooks import combine
from ingestq.ingest.request import IngestRequest, make_request
from ingestq.ingest.wait import ingest
from ingestq.store.digest import Digest
from ingestq.store.helpers import Backoff
from ingestq.store.local import LocalStore
from ingestq.tasks import keys
from ingestq.tasks.ingest_hooks import worker_hooks
from ingestq.tasks.lease import RedisLeaseLocker
from ingestq.tasks.metrics import MetricsHooks
from tests.ingest.helpers import BytesSource, MiB, Recorder
from tests.servers.util import wait_until


@pytest.fixture
def locker(redis_url: str) -> RedisLeaseLocker:
    return RedisLeaseLocker(redis_url, ttl=1.5)


def _request(data: bytes) -> IngestRequest:
    return make_request(
        {"type": "memory"}, "memory:test", digest=Digest.from_bytes(data), size=len(data)
    )


def test_the_lease_heartbeat_gets_job_source_offset_total_and_rate(
    locker: RedisLeaseLocker, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store", lockers=[locker], fsync=False)
    data = os.urandom(2 * MiB + 1)
    req = _request(data)
    seen: list[tuple[Any, ...]] = []

    def snapshot(offset: int, total: int) -> None:
        lease = locker.held(req.ref)
        assert lease is not None
        p = lease.progress
        seen.append((p.publish, p.job_id, p.source, p.expected, p.offset, p.total, p.rate > 0))

    probe = Recorder(on_progress=snapshot)
    result = ingest_once(
        store, BytesSource(data), req, hooks=combine(worker_hooks(locker, "job-1"), probe)
    )
    assert result.fetched
    head = (True, "job-1", "memory:test", str(req.digest))
    total = len(data)
    assert seen == [
        (*head, 0, total, False),  # the copy starts: nothing fetched yet
        (*head, CHUNK, total, True),
        (*head, 2 * CHUNK, total, True),
        (*head, total, total, True),
    ]


def test_a_stolen_lease_turns_the_failure_into_a_retry(
    locker: RedisLeaseLocker, redis_url: str, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store", lockers=[locker], fsync=False)
    data = os.urandom(3 * MiB)
    req = _request(data)
    r = redis.Redis.from_url(redis_url)

    def steal(offset: int, total: int) -> None:
        if offset == CHUNK:
            lease = locker.held(req.ref)
            assert lease is not None
            r.set(keys.ref_keys(req.ref).lease, "thief")
            wait_until(lambda: lease.lost, 10, "the heartbeat notices")

    probe = Recorder(on_progress=steal)
    with pytest.raises(errdefs.Unavailable, match="lease lost, will retry") as caught:
        ingest_once(store, BytesSource(data), req, hooks=combine(worker_hooks(locker, "j"), probe))
    assert caught.value.details["reason"] == "lease-lost"
    assert probe.events[-1] == ("failed", caught.value)
    assert list(store.walk()) == []


def _sample(name: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name) or 0.0


def test_metrics_count_fetched_bytes_resumes_and_lock_waits(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store", fsync=False)
    data = os.urandom(2 * MiB + 7)
    req = _request(data)
    with store.writer(req.ref, req.expected) as w:
        w.write(data[:MiB])
    holder = store.writer(req.ref, req.expected)
    before = {n: _sample(n) for n in ("ingestq_bytes_fetched_total", "ingestq_resumes_total",
                                      "ingestq_lock_waits_total")}  # fmt: skip

    def sleep(delay: float) -> None:
        holder.close()  # the other writer stops; the ingest stays for a resume

    result = ingest(
        store, BytesSource(data), req, hooks=MetricsHooks(), sleep=sleep,
        backoff=Backoff(0.05, 2.0, rng=random.Random(1)),
    )  # fmt: skip
    assert result.resumed_from == MiB and result.bytes_fetched == len(data) - MiB
    assert _sample("ingestq_bytes_fetched_total") - before["ingestq_bytes_fetched_total"] == (
        len(data) - MiB
    )
    assert _sample("ingestq_resumes_total") - before["ingestq_resumes_total"] == 1
    assert _sample("ingestq_lock_waits_total") - before["ingestq_lock_waits_total"] == 1
