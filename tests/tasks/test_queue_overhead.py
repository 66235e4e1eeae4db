"""What a queued ingest costs in Redis: a 4 KiB job done within a heartbeat has no
STARTED write, no status board entry, reads its cancel flag inside the lease's acquire
and releases the lease inside its result write (a small file takes no lease at all); a
long write still shows STARTED and its board entry (cancel while a write lasts:
tests/worker/test_cli_jobs.py). The commands per job are counted with the server's
``INFO commandstats``."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from ingestq.jobs.api import JobState
from ingestq.store.digest import Digest
from ingestq.tasks.client import enqueue_ingest, enqueue_many
from tests.servers.util import wait_until
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.conftest import Cluster, ClusterFactory

#: Redis commands (Lua's included) per 4 KiB job, producer and worker together: about
#: 41 with STARTED written and a cancel poll at the first chunk, about 36 with the
#: result written by Celery (GET, then MULTI SETEX PUBLISH EXEC) and the lease released
#: apart, about 30 with the release inside the result write's script and the job index
#: trimmed once per ``enqueue_many`` batch, about 21 now that a small file (with or
#: without a known digest) is put without a lease. The bound leaves room for an idle
#: worker's polls and a heartbeat.
MAX_COMMANDS_PER_JOB = 23


def _commands(r: redis.Redis) -> dict[str, int]:
    stats = r.info("commandstats")
    skip = ("cmdstat_mget", "cmdstat_config|resetstat", "cmdstat_info")
    return {k: int(v["calls"]) for k, v in stats.items() if k not in skip}


def _wait_all(r: redis.Redis, ids: list[str], timeout: float = 60) -> None:
    """Poll the result keys with one MGET per round (counted apart)."""

    def done() -> bool:
        nonlocal ids
        values = r.mget([f"celery-task-meta-{i}" for i in ids])
        ids = [i for i, v in zip(ids, values, strict=True) if v is None or b"SUCCESS" not in v]
        return not ids

    wait_until(done, timeout, "every job succeeded")


@pytest.mark.slow
def test_small_jobs_cost_few_redis_commands_and_write_no_started(cluster: Cluster) -> None:
    files = cluster.root.parent / "files"
    paths: list[Path] = []
    for i in range(41):
        path = files / f"small-{i}"
        path.write_bytes(os.urandom(4096))
        paths.append(path)
    cluster.start_worker(concurrency=1)
    enqueue_ingest(str(paths.pop()), client=cluster.client).wait(timeout=60)  # warm up
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        r.config_resetstat()
        jobs = enqueue_many([{"source": str(p)} for p in paths], client=cluster.client)
        _wait_all(r, [j.id for j in jobs])
        counted = _commands(r)
    finally:
        r.close()
    per_job = sum(counted.values()) / len(jobs)
    assert per_job <= MAX_COMMANDS_PER_JOB, (per_job, counted)
    assert counted["cmdstat_lpush"] == len(jobs)  # one message each
    # One result write per job (SUCCESS: no STARTED), give or take a job a heartbeat
    # happened to catch; the cancel flag is read once (HEXISTS) before the file is read:
    # these small files of no known digest take no lease (a job lasting a cancel poll
    # would add a read).
    assert counted["cmdstat_setex"] <= len(jobs) + 2, counted
    assert counted["cmdstat_hexists"] == len(jobs), counted
    assert counted.get("cmdstat_hget", 0) <= 2, counted
    assert all(j.state is JobState.SUCCEEDED for j in jobs)


#: Redis commands per 4 KiB job of known digest and size (the small-blob path),
#: producer and worker together: 35 with a cancel-flag read and a holder lookup of their
#: own (two round trips), 34 with the flag read inside the lease's acquire and no lookup,
#: 32 with the release inside the result write's script, 30 with the job index trimmed
#: once per ``enqueue_many`` batch, about 21 for a file, which takes no lease. The
#: bound leaves room for an idle worker's polls and a pass of its sweeper (a run of 20
#: jobs counted 30.7 and, with a sweeper pass in it, 31.9).
MAX_COMMANDS_PER_SMALL_JOB = 33


def _small_requests(files: Path, n: int) -> list[dict[str, object]]:
    requests = []
    for i in range(n):
        data = os.urandom(4096)
        path = files / f"known-{i}"
        path.write_bytes(data)
        requests.append({"source": str(path), "digest": str(Digest.from_bytes(data)),
                         "size": len(data)})  # fmt: skip
    return requests


def _run_counted(
    cluster: Cluster,
    requests: list[dict[str, object]],
    done: Callable[[dict[str, int]], bool] = lambda counted: True,
) -> dict[str, int]:
    """Run ``requests`` (after a warm-up job) on one worker; the Redis commands they
    cost, checking that every one succeeded and left no lease behind. ``counted["renewals"]``
    is how many lease renewals of the worker's own (its sweeper's lease, renewed every
    second with the tests' 3 s lease) may have fallen in the window: one per second.
    ``done`` says when the counts include the run's last writes after the results (a
    batch's done mark)."""
    cluster.start_worker(concurrency=1)
    enqueue_many(requests[:1], client=cluster.client)[0].wait(timeout=60)  # warm up
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        r.config_resetstat()
        started = time.monotonic()
        jobs = enqueue_many(requests[1:], client=cluster.client)
        _wait_all(r, [j.id for j in jobs])

        def settled() -> dict[str, int] | None:
            now = _commands(r)
            return now if done(now) else None

        counted = wait_until(settled, 30, "the run's last writes")
        assert counted is not None
        renewals = math.ceil(time.monotonic() - started)
        # No lease is left to expire: none taken, or released with the result write.
        assert r.keys("ingestq:lease:*") == [] and r.keys("ingestq:holder:*") == []
    finally:
        r.close()
    assert all(j.state is JobState.SUCCEEDED for j in jobs)
    per_job = sum(counted.values()) / len(jobs)
    assert per_job <= MAX_COMMANDS_PER_SMALL_JOB, (per_job, counted)
    # One cancel-flag read each (HEXISTS, in the acquire script or on its own), no
    # holder lookup; no MULTI but kombu's delivery and ack.
    assert counted["cmdstat_hexists"] == len(jobs), counted
    assert counted.get("cmdstat_hget", 0) == 0, counted
    assert counted.get("cmdstat_hgetall", 0) == 0, counted
    assert counted["cmdstat_multi"] <= 2 * len(jobs) + 2, counted
    counted["renewals"] = renewals
    return counted


@pytest.mark.slow
@pytest.mark.parametrize("batch_jobs", ["0", "64"], ids=["one-message-each", "batched"])
def test_small_files_take_no_lease(
    cluster_factory: ClusterFactory, redis_url: str, store_root: Path, batch_jobs: str
) -> None:
    cluster = cluster_factory(redis_url, store_root, INGESTQ_BATCH_JOBS=batch_jobs)
    requests = _small_requests(cluster.root.parent / "files", 41)
    marks = 0 if batch_jobs == "0" else 1  # a batch sets its done mark after the results
    counted = _run_counted(cluster, requests, lambda c: c.get("cmdstat_set", 0) >= marks)
    renewals = counted.pop("renewals")
    jobs = len(requests) - 1
    assert sum(counted.values()) / jobs <= MAX_COMMANDS_PER_JOB, counted
    # One pool round trip besides the flag: the result write (the claim is the other
    # script); no lease was asked for, so no SET of one (a batch sets its done mark).
    assert counted["cmdstat_evalsha"] <= 2 * jobs + 2 + renewals, counted
    assert counted.get("cmdstat_set", 0) == marks, counted


@pytest.mark.slow
def test_small_remote_jobs_read_their_cancel_flag_in_the_acquire(
    cluster: Cluster, blob_server: BlobServer
) -> None:
    requests = []
    for i in range(21):
        blob = Behaviour(data=os.urandom(4096))
        url = blob_server.add(f"/small-{i}", blob)
        requests.append({"source": url, "digest": blob.digest, "size": 4096})
    counted = _run_counted(cluster, requests)
    renewals = counted.pop("renewals")
    jobs = len(requests) - 1
    # Two round trips of the pool process: the acquire (which reads the flag) and the
    # result write, which releases the lease (tasks/backend.py).
    assert counted["cmdstat_evalsha"] <= 3 * jobs + 2 + renewals, counted  # with the claim
    assert counted["cmdstat_evalsha"] >= 3 * jobs, counted


@pytest.mark.slow
def test_a_long_write_shows_started_and_its_board_entry(
    cluster: Cluster, blob_server: BlobServer
) -> None:
    data = os.urandom(2 << 20)
    blob = Behaviour(data=data, gate_offset=1 << 20)
    url = blob_server.add("/long", blob)
    cluster.start_worker()
    job = enqueue_ingest(url, digest=blob.digest, size=len(data), client=cluster.client)
    assert blob.gate_reached.wait(30), cluster.logs()
    wait_until(lambda: job.state is JobState.STARTED, 30, "the long job shows STARTED")
    entry = wait_until(
        lambda: next((a for a in cluster.client.active() if a.job_id == job.id), None),
        30,
        "the long job on the status board",
    )
    assert entry.ref == job.ref
    blob.gate.set()
    assert str(job.wait(timeout=60).digest) == blob.digest
    assert job.state is JobState.SUCCEEDED  # a late heartbeat never hides the outcome
    assert cluster.client.active() == []
