"""A worker killed mid-ingest: the job is redelivered and resumes from the stored
offset (the source sees a Range request from there); the blob is correct."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store.local import LocalStore
from ingestq.tasks.client import enqueue_ingest
from tests.servers.util import wait_until
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.conftest import Cluster, ClusterFactory

MiB = 1 << 20


def _start_gated_job(cluster: Cluster, blob_server: BlobServer) -> tuple[Behaviour, str, int]:
    data = os.urandom(8 * MiB)
    blob = Behaviour(data=data, gate_offset=4 * MiB)
    url = blob_server.add("/big", blob)
    job = enqueue_ingest(url, digest=blob.digest, size=len(data), client=cluster.client)
    assert blob.gate_reached.wait(30), cluster.logs()
    store = LocalStore(cluster.root, fsync=False)
    status = wait_until(
        lambda: (s := store.status(job.ref)).offset == 4 * MiB and s.holder is not None and s,
        30,
        "the worker wrote up to the gate",
    )
    assert status.holder is not None
    return blob, job.id, status.holder.pid


def _assert_resumed(
    cluster: Cluster, blob_server: BlobServer, blob: Behaviour, job_id: str
) -> None:
    info = cluster.client.job(job_id).wait(timeout=90)
    assert str(info.digest) == blob.digest
    blob.gate.set()  # let the killed connection's handler finish and log
    wait_until(lambda: len(blob_server.requests_for("/big")) == 2, 10, "both requests logged")
    first, second = sorted(blob_server.requests_for("/big"), key=lambda r: r.range is not None)
    assert first.range is None
    assert second.range == f"bytes={4 * MiB}-" and second.status == 206
    assert second.if_range == blob.etag
    assert second.sent == 4 * MiB
    meta = cluster.client.meta(job_id)
    assert meta is not None and meta["result"]["resumed_from"] == 4 * MiB
    assert cluster.client.records.get(job_id)["redeliveries"] == "1"
    path = cluster.root / "blobs" / "sha256" / blob.digest.split(":")[1]
    assert path.read_bytes() == blob.data


def test_sigkill_of_the_pool_process_redelivers_and_resumes_from_the_stored_offset(
    cluster: Cluster, blob_server: BlobServer
) -> None:
    worker = cluster.start_worker()
    blob, job_id, pid = _start_gated_job(cluster, blob_server)
    assert pid in worker.children()
    os.kill(pid, signal.SIGKILL)
    _assert_resumed(cluster, blob_server, blob, job_id)


def test_sigkill_of_the_whole_worker_redelivers_after_the_visibility_timeout(
    cluster_factory: ClusterFactory, redis_url: str, store_root: Path, blob_server: BlobServer
) -> None:
    cluster = cluster_factory(
        redis_url, store_root, INGESTQ_VISIBILITY_TIMEOUT="4", INGESTQ_RESTORE_INTERVAL="1"
    )
    doomed = cluster.start_worker()
    blob, job_id, pid = _start_gated_job(cluster, blob_server)
    assert pid in doomed.children()
    cluster.start_worker()
    os.killpg(doomed.pid, signal.SIGKILL)
    _assert_resumed(cluster, blob_server, blob, job_id)


def test_a_job_whose_worker_keeps_dying_fails_with_aborted_instead_of_looping(
    cluster_factory: ClusterFactory, redis_url: str, store_root: Path, blob_server: BlobServer
) -> None:
    cluster = cluster_factory(redis_url, store_root, INGESTQ_MAX_REDELIVERIES="1")
    worker = cluster.start_worker()
    blob, job_id, pid = _start_gated_job(cluster, blob_server)
    blob.gate_requests = 2  # the resumed request stalls too
    os.kill(pid, signal.SIGKILL)
    store = LocalStore(cluster.root, fsync=False)
    ref = f"blob-{blob.digest}"
    second = wait_until(
        lambda: (h := store.status(ref).holder) is not None and h.pid != pid and h.pid,
        30,
        "the redelivered job holds the ref in a new pool process",
    )
    assert second in worker.children()
    os.kill(second, signal.SIGKILL)
    with pytest.raises(errdefs.Aborted, match="redelivered 2 times"):
        cluster.client.job(job_id).wait(timeout=60)
    assert cluster.client.records.get(job_id)["redeliveries"] == "2"
    assert store.status(ref).offset == 4 * MiB  # kept for a later resume


def test_a_killed_pool_processs_lease_is_taken_over_at_once_not_after_its_ttl(
    cluster_factory: ClusterFactory, redis_url: str, store_root: Path, blob_server: BlobServer
) -> None:
    # A 60 s lease: each kill would stall the redelivered job for a minute if it waited
    # for the dead process's lease to expire.
    cluster = cluster_factory(redis_url, store_root, INGESTQ_LEASE_TTL="60")
    worker = cluster.start_worker()
    started = time.monotonic()
    blob, job_id, pid = _start_gated_job(cluster, blob_server)
    blob.gate_requests = 3  # the first two resumed requests stop at the gate too
    store = LocalStore(cluster.root, fsync=False)
    ref = f"blob-{blob.digest}"
    fences = [wait_until(lambda: cluster.client.board.get(ref), 10, "status published").fence]
    for _ in range(2):
        assert pid in worker.children()
        os.kill(pid, signal.SIGKILL)
        pid = wait_until(
            lambda old=pid: (h := store.status(ref).holder) is not None and h.pid != old and h.pid,
            30,
            "the redelivered job holds the ref in a new pool process",
        )
        fences.append(
            wait_until(
                lambda p=pid: (a := cluster.client.board.get(ref)) and a.pid == p and a,
                10,
                "the new holder publishes its status",
            ).fence
        )
    blob.gate.set()
    info = cluster.client.job(job_id).wait(timeout=30)
    assert str(info.digest) == blob.digest
    assert time.monotonic() - started < 30  # two lease ttls would be 120 s
    assert fences == sorted(set(fences))  # each takeover got a larger fence
    assert cluster.client.records.get(job_id)["redeliveries"] == "2"
    path = cluster.root / "blobs" / "sha256" / blob.digest.split(":")[1]
    assert path.read_bytes() == blob.data


@pytest.mark.slow
def test_a_whole_dead_worker_is_swept_back_to_a_live_worker_before_the_visibility_timeout(
    cluster_factory: ClusterFactory, redis_url: str, store_root: Path, blob_server: BlobServer
) -> None:
    # The default 12 h visibility timeout: only the sweeper can bring the job back.
    cluster = cluster_factory(redis_url, store_root, INGESTQ_SWEEP_INTERVAL="1")
    doomed = cluster.start_worker()
    blob, job_id, pid = _start_gated_job(cluster, blob_server)
    assert pid in doomed.children()
    live = cluster.start_worker()
    os.killpg(doomed.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    _assert_resumed(cluster, blob_server, blob, job_id)
    assert time.monotonic() - killed_at < 30  # lease ttl 3 s + a few 1 s sweeps
    assert "put back on the queue" in live.log_text()
    meta = cluster.client.meta(job_id)
    assert meta is not None and meta["status"] == "SUCCESS"
    # No stale copy left to run again: the live worker acks the message just after
    # storing the result the wait above woke on.
    wait_until(lambda: cluster.client.client.hlen("unacked") == 0, 30, "the message acked")


@pytest.mark.slow
def test_the_sweeper_leaves_the_jobs_of_live_workers_alone(
    cluster_factory: ClusterFactory, redis_url: str, store_root: Path, blob_server: BlobServer
) -> None:
    cluster = cluster_factory(redis_url, store_root, INGESTQ_SWEEP_INTERVAL="1")
    workers = [cluster.start_worker(), cluster.start_worker()]
    blob, job_id, _ = _start_gated_job(cluster, blob_server)
    waiter = enqueue_ingest(
        blob_server.url + "/big", digest=blob.digest, size=len(blob.data), client=cluster.client
    )
    wait_until(lambda: any("sweeps for dead" in w.log_text() for w in workers), 20, "a sweeper")
    deadline = time.monotonic() + 6  # six sweeps, the held message older than each
    wait_until(lambda: time.monotonic() > deadline, 10, "six sweep intervals pass")
    assert not any("put back on the queue" in w.log_text() for w in workers)
    blob.gate.set()
    assert str(cluster.client.job(job_id).wait(timeout=60).digest) == blob.digest
    assert str(waiter.wait(timeout=60).digest) == blob.digest
    assert [r.status for r in blob_server.requests_for("/big")] == [200]
    assert "redeliveries" not in cluster.client.records.get(job_id)
