"""Redis restarted with jobs in flight (AOF on): no job is lost. Running jobs finish
and store their results; queued jobs survive in the AOF and run afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingestq.jobs.api import JobState
from ingestq.tasks.client import enqueue_ingest
from tests.servers.redis_server import RedisFactory
from tests.servers.util import wait_until
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.conftest import ClusterFactory

MiB = 1 << 20


@pytest.mark.parametrize(("fsync", "kill"), [("everysec", False), ("always", True)])
def test_jobs_in_flight_survive_a_redis_restart(
    redis_factory: RedisFactory, cluster_factory: ClusterFactory, store_root: Path,
    blob_server: BlobServer, fsync: str, kill: bool,
) -> None:  # fmt: skip
    server = redis_factory(appendfsync=fsync)
    cluster = cluster_factory(server.url, store_root, INGESTQ_LEASE_TTL="10")
    cluster.start_worker()
    cluster.start_worker()
    blobs = [Behaviour(data=os.urandom(2 * MiB), gate_offset=MiB) for _ in range(6)]
    urls = [blob_server.add(f"/b{i}", b) for i, b in enumerate(blobs)]
    jobs = [
        enqueue_ingest(u, digest=b.digest, size=len(b.data), client=cluster.client)
        for u, b in zip(urls, blobs, strict=True)
    ]
    running = wait_until(
        lambda: (r := [b for b in blobs if b.gate_reached.is_set()]) and len(r) == 2 and r,
        30,
        "two jobs are mid-ingest",
    )
    # A running job shows STARTED from its first heartbeat on (not in its first second).
    wait_until(
        lambda: (
            sum(j.state is JobState.QUEUED for j in jobs) == 4
            and sum(j.state is JobState.STARTED for j in jobs) == 2
        ),
        30,
        "two jobs started, four queued",
    )

    server.stop(kill=kill)
    server.start()
    for b in running:
        b.gate.set()
    for b in blobs:
        b.gate.set()

    infos = [j.wait(timeout=120) for j in jobs]
    assert [str(i.digest) for i in infos] == [b.digest for b in blobs], cluster.logs()
    for b in blobs:
        assert (store_root / "blobs" / "sha256" / b.digest.split(":")[1]).read_bytes() == b.data
