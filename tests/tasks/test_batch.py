"""Batch messages (``ingestq.ingest.batch``): ``enqueue_many`` puts small local-file jobs
in shared messages; a real worker runs them, and each job keeps its own id, result,
errdefs kind, cancel flag and retries; a redelivered batch hands its unfinished jobs on
as messages of their own; a forged batch message harms nothing."""

from __future__ import annotations

import json
import os
import signal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from ingestq import errdefs
from ingestq.ingest.request import make_request
from ingestq.jobs.api import JobState
from ingestq.store.digest import Digest
from ingestq.store.local import LocalStore
from ingestq.tasks import keys
from ingestq.tasks.app import QUEUE
from ingestq.tasks.batching import BATCH_BLOB_MAX, BATCH_JOBS, BatchEntry, parse_entries
from ingestq.tasks.client import enqueue_ingest, enqueue_many
from ingestq.tasks.names import TASK_INGEST, TASK_INGEST_BATCH
from ingestq.tasks.queue.ingest import QueueIngestJob
from tests.servers.redis_server import RedisFactory
from tests.servers.util import wait_until
from tests.tasks.conftest import Cluster, ClusterFactory
from tests.tasks.failsource import GATE_ENV
from tests.tasks.workers import Worker


def _file(root: Path, name: str, size: int = 4096) -> tuple[Path, bytes]:
    root.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    path = root / name
    path.write_bytes(data)
    return path, data


def _known(path: Path, data: bytes) -> dict[str, Any]:
    """An enqueue_many request with the digest and size given (so it may be batched)."""
    return {"source": str(path), "digest": str(Digest.from_bytes(data)), "size": len(data)}


def _queued(cluster: Cluster) -> list[dict[str, Any]]:
    """The messages waiting on the ingest queue (no worker consuming), as kombu's JSON."""
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        return [json.loads(m) for m in r.lrange(QUEUE, 0, -1)]
    finally:
        r.close()


def _task(message: dict[str, Any]) -> str:
    return str(message["headers"]["task"])


def _succeeded(job: QueueIngestJob) -> bool:
    return job.state is JobState.SUCCEEDED


def _logged(worker: Worker, text: str) -> bool:
    return text in worker.log_text()


def _blob(cluster: Cluster, digest: Digest) -> Path:
    return cluster.root / "blobs" / digest.algorithm / digest.encoded


def test_batch_entries_are_checked() -> None:
    request: dict[str, Any] = {"source": {"type": "file", "path": "/x"}}
    good: dict[str, Any] = {"id": "j1", "request": request}
    assert parse_entries([good, {**good, "id": "j2", "max_source_retries": 2}]) == [
        BatchEntry("j1", request),
        BatchEntry("j2", request, 2),
    ]
    for bad, what in (
        ("nope", "not a list"),
        (["x"], "job 0 is not an object"),
        ([{"request": {}}], "job 0 has no id"),
        ([{"id": "j", "request": "x"}], "job j has no request object"),
        ([{**good, "max_source_retries": -1}], "max_source_retries"),
        ([{**good, "max_source_retries": True}], "max_source_retries"),
        ([good, {**good, "max_source_retries": 1}], "job j1 is in it twice"),
        ([{**good, "id": f"j{i}"} for i in range(BATCH_JOBS + 1)], "more than 64"),
    ):
        with pytest.raises(errdefs.InvalidArgument, match=what):
            parse_entries(bad)


@pytest.mark.slow
def test_small_files_share_messages_and_each_job_keeps_its_own_result(cluster: Cluster) -> None:
    files_dir = cluster.root.parent / "files"
    small = [_file(files_dir, f"s{i}") for i in range(BATCH_JOBS + 6)]
    big = _file(files_dir, "big", BATCH_BLOB_MAX + 1)
    unsized = _file(files_dir, "unsized")
    requests = [_known(p, d) for p, d in small] + [_known(*big), {"source": str(unsized[0])}]
    jobs = enqueue_many(requests, client=cluster.client)

    # Two batches (64 + 6 small files); the large file and the one of unknown size
    # travel alone, under their own job ids.
    messages = _queued(cluster)
    assert sorted(_task(m) for m in messages) == sorted(
        [TASK_INGEST_BATCH, TASK_INGEST_BATCH, TASK_INGEST, TASK_INGEST]
    )
    singles = {m["headers"]["id"] for m in messages if _task(m) == TASK_INGEST}
    assert singles == {jobs[-2].id, jobs[-1].id}
    assert all(j.state is JobState.QUEUED for j in jobs)

    worker = cluster.start_worker()
    for job, (path, data) in zip(jobs, [*small, big, unsized], strict=True):
        info = job.wait(timeout=60)
        assert info.digest == Digest.from_bytes(data), cluster.logs()
        assert _blob(cluster, info.digest).read_bytes() == data
        assert job.state is JobState.SUCCEEDED
        meta = cluster.client.meta(job.id)
        assert meta is not None and meta["task_id"] == job.id
        assert meta["result"]["ref"] == job.ref
        # The meta a job of its own would have: its task name, request and worker.
        assert meta["name"] == TASK_INGEST and meta["worker"] == worker.name
        assert meta["args"][0]["source"] == {"type": "file", "path": str(path)}
    log = worker.log_text()
    assert all(f"{TASK_INGEST}[{j.id}]" not in log for j in jobs[:-2])  # ran in the batches
    assert all(f"{TASK_INGEST}[{j.id}]" in log for j in jobs[-2:])


@pytest.mark.slow
def test_a_batch_keeps_each_jobs_errdefs_kind_and_cancel_flag(cluster: Cluster) -> None:
    files_dir = cluster.root.parent / "files"
    good = _file(files_dir, "good")
    wrong = _file(files_dir, "wrong")
    doomed = _file(files_dir, "doomed")
    missing = files_dir / "missing"
    other, x = str(Digest.from_bytes(b"other")), str(Digest.from_bytes(b"x"))
    wrong_request = {**_known(*wrong), "digest": other}
    missing_request = {"source": str(missing), "digest": x, "size": 10}
    jobs = enqueue_many(
        [_known(*good), wrong_request, missing_request, _known(*doomed)], client=cluster.client
    )
    assert [_task(m) for m in _queued(cluster)] == [TASK_INGEST_BATCH]
    jobs[3].cancel()  # while queued: no worker yet, so only the flag can stop it
    # The same bad requests as jobs of their own, for the kinds to compare with.
    alone = [enqueue_ingest(str(wrong[0]), digest=other, size=len(wrong[1]),
                            client=cluster.client),
             enqueue_ingest(str(missing), digest=x, size=10, client=cluster.client)]  # fmt: skip

    cluster.start_worker()
    assert jobs[0].wait(timeout=60).digest == Digest.from_bytes(good[1])
    for in_batch, own in zip(jobs[1:3], alone, strict=True):
        with pytest.raises(errdefs.ErrdefsError) as batched:
            in_batch.wait(timeout=60)
        with pytest.raises(errdefs.ErrdefsError) as single:
            own.wait(timeout=60)
        assert type(batched.value) is type(single.value), (batched.value, single.value)
        assert type(batched.value) is not errdefs.Unknown
        assert in_batch.state is JobState.FAILED
        record = cluster.client.records.get(in_batch.id)
        assert type(batched.value).__name__ in record["error"]
    with pytest.raises(errdefs.Canceled):
        jobs[3].wait(timeout=60)
    assert not _blob(cluster, Digest.from_bytes(doomed[1])).exists()


@pytest.mark.slow
def test_a_ref_with_another_writer_leaves_the_batch_and_waits_on_its_own(
    cluster: Cluster,
) -> None:
    files_dir = cluster.root.parent / "files"
    free, busy = _file(files_dir, "free"), _file(files_dir, "busy")
    jobs = enqueue_many([_known(*free), _known(*busy)], client=cluster.client)
    holder = LocalStore(cluster.root, fsync=False)
    writer = holder.writer(jobs[1].ref)  # another writer holds the ref
    try:
        worker = cluster.start_worker()
        assert jobs[0].wait(timeout=60).digest == Digest.from_bytes(free[1])
        wait_until(lambda: jobs[1].state is JobState.RETRYING, 30, "the busy job waits")
        assert "locked" in (jobs[1].reason or "")
    finally:
        writer.close()  # its ingest stays, for the job to take over
    assert jobs[1].wait(timeout=60).digest == Digest.from_bytes(busy[1])
    log = worker.log_text()
    assert f"{TASK_INGEST}[{jobs[1].id}]" in log  # it ran as its own message
    assert f"{TASK_INGEST}[{jobs[0].id}]" not in log


@pytest.mark.slow
def test_a_redelivered_batch_hands_only_its_unfinished_jobs_on(cluster: Cluster) -> None:
    files_dir = cluster.root.parent / "files"
    files = [_file(files_dir, f"r{i}") for i in range(3)]
    jobs = enqueue_many([_known(p, d) for p, d in files], client=cluster.client)
    [message] = _queued(cluster)
    batch_id = message["headers"]["id"]
    worker = cluster.start_worker()
    for job in jobs:
        job.wait(timeout=60)
    # Back on the queue as kombu's restore puts a message whose worker was lost.
    message["headers"]["redelivered"] = True
    message["properties"]["delivery_info"]["redelivered"] = True
    runs = f"{TASK_INGEST_BATCH}[{batch_id}] succeeded in "
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        assert r.exists(keys.batch_done_key(batch_id))
        r.lpush(QUEUE, json.dumps(message))  # the batch had run to its end: nothing
        wait_until(lambda: worker.log_text().count(runs) == 2, 30, "the copy is acked")
        assert (
            worker.log_text().rsplit(runs, 1)[1].split("\n")[0].endswith("{'ended': 0, 'left': 0}")
        )
        # As if the worker had died before the end: no mark, one job with no outcome.
        r.delete(keys.batch_done_key(batch_id), keys.result_key(jobs[0].id))
        r.lpush(QUEUE, json.dumps(message))
        wait_until(lambda: worker.log_text().count(runs) == 3, 30, "the copy hands on")
        assert (
            worker.log_text().rsplit(runs, 1)[1].split("\n")[0].endswith("{'ended': 0, 'left': 1}")
        )
        assert jobs[0].wait(timeout=60).digest == Digest.from_bytes(files[0][1])
        # The copy recorded that it handed jobs[0] on: another copy does not send it
        # again, even with no outcome of it to see.
        assert r.smembers(keys.batch_handed_key(batch_id)) == {jobs[0].id.encode()}
        r.delete(keys.batch_done_key(batch_id), keys.result_key(jobs[0].id))
        r.lpush(QUEUE, json.dumps(message))
        wait_until(lambda: worker.log_text().count(runs) == 4, 30, "the copy is acked")
        assert (
            worker.log_text().rsplit(runs, 1)[1].split("\n")[0].endswith("{'ended': 0, 'left': 0}")
        )
    finally:
        r.close()
    log = worker.log_text()
    assert log.count(f"{TASK_INGEST}[{jobs[0].id}] received") == 1  # handed on once
    assert all(f"{TASK_INGEST}[{j.id}]" not in log for j in jobs[1:])  # ended: not again


@pytest.mark.slow
def test_a_job_over_the_workers_small_blob_threshold_runs_as_its_own_message(
    cluster: Cluster,
) -> None:
    files_dir = cluster.root.parent / "files"
    files = [_file(files_dir, f"t{i}") for i in range(2)]
    jobs = enqueue_many([_known(p, d) for p, d in files], client=cluster.client)
    assert [_task(m) for m in _queued(cluster)] == [TASK_INGEST_BATCH]
    worker = cluster.start_worker(env={"INGESTQ_SMALL_BLOB": "1000"})  # 4 KiB takes a lease
    for job, (_, data) in zip(jobs, files, strict=True):
        assert job.wait(timeout=60).digest == Digest.from_bytes(data)
    assert all(f"{TASK_INGEST}[{j.id}]" in worker.log_text() for j in jobs)


def test_batches_are_off_with_batch_jobs_0(cluster_factory: Any, redis_url: str,
                                            store_root: Path) -> None:  # fmt: skip
    cluster = cluster_factory(redis_url, store_root, INGESTQ_BATCH_JOBS="0")
    files = [_file(store_root.parent / "files", f"o{i}") for i in range(3)]
    enqueue_many([_known(p, d) for p, d in files], client=cluster.client)
    assert [_task(m) for m in _queued(cluster)] == [TASK_INGEST] * 3


@pytest.mark.slow
def test_a_forged_batch_message_harms_nothing(cluster: Cluster) -> None:
    files_dir = cluster.root.parent / "files"
    worker = cluster.start_worker()
    app = cluster.client.app
    files = [_file(files_dir, f"f{i}") for i in range(BATCH_JOBS + 1)]
    entries = []
    for i, (path, data) in enumerate(files):
        source = {"type": "file", "path": str(path)}
        sized = i != 3  # one the batch may not run: no size
        request = make_request(source, str(path), digest=Digest.from_bytes(data) if sized
                               else None, size=len(data) if sized else 0)  # fmt: skip
        entries.append(BatchEntry(f"forged-{i}", request.to_json()).to_json())
    refused = [
        app.send_task(TASK_INGEST_BATCH, kwargs={"jobs": bad}, queue=QUEUE).id
        for bad in ("nope", entries, [entries[0], entries[1], entries[0]])
    ]
    app.send_task(TASK_INGEST_BATCH, kwargs={"jobs": entries[:BATCH_JOBS]}, queue=QUEUE)
    for i, (_, data) in enumerate(files[:BATCH_JOBS]):
        job = cluster.client.job(f"forged-{i}")  # no record: known once it has a result
        wait_until(partial(_succeeded, job), 60, f"{job.id} succeeds")
        assert job.wait(timeout=1).digest == Digest.from_bytes(data), cluster.logs()
    for batch_id in refused:
        failed = f"{TASK_INGEST_BATCH}[{batch_id}] raised expected: InvalidArgument"
        wait_until(partial(_logged, worker, failed), 30, "the batch fails")
    # Named only in a refused batch: it ends with that batch's error instead of waiting.
    with pytest.raises(errdefs.InvalidArgument, match="more than 64"):
        cluster.client.job(f"forged-{BATCH_JOBS}").wait(timeout=30)
    assert f"{TASK_INGEST}[forged-3]" in worker.log_text()  # handed on
    # The worker still runs jobs.
    path, data = _file(files_dir, "after")
    assert enqueue_ingest(str(path), client=cluster.client).wait(timeout=60).digest == (
        Digest.from_bytes(data)
    )


@pytest.mark.slow
def test_a_pool_process_killed_mid_batch_loses_no_job(cluster: Cluster, tmp_path: Path) -> None:
    files_dir = cluster.root.parent / "files"
    files = [_file(files_dir, f"k{i}") for i in range(BATCH_JOBS)]
    jobs = enqueue_many([_known(p, d) for p, d in files], client=cluster.client)
    gate = tmp_path / "gate"
    gate.write_text(jobs[0].id)  # the pool process holds once the first job is done
    worker = cluster.start_worker(env={GATE_ENV: str(gate)})
    wait_until(Path(f"{gate}.held").exists, 60, "the batch holds after its first job")
    [child] = worker.children()
    os.kill(child, signal.SIGKILL)
    assert _blob(cluster, Digest.from_bytes(files[0][1])).exists()
    assert not _blob(cluster, Digest.from_bytes(files[1][1])).exists()
    gate.unlink()  # the redelivered batch runs no job itself, so nothing holds it
    for job, (_, data) in zip(jobs, files, strict=True):
        assert job.wait(timeout=120).digest == Digest.from_bytes(data), cluster.logs()
        assert _blob(cluster, Digest.from_bytes(data)).read_bytes() == data
    log = worker.log_text()
    assert "exited with 'signal 9 (SIGKILL)'" in log
    # Redelivered, the batch ran nothing itself and handed every job on (none had an
    # outcome: they are written at the end).
    assert "{'ended': 0, 'left': 64}" in log
    assert all(f"{TASK_INGEST}[{j.id}]" in log for j in jobs)


@pytest.mark.slow
def test_a_batch_whose_redis_goes_away_writes_its_outcomes_when_it_is_back(
    redis_factory: RedisFactory, cluster_factory: ClusterFactory, store_root: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    server = redis_factory(appendfsync="always")
    cluster = cluster_factory(server.url, store_root)
    files = [_file(store_root.parent / "files", f"g{i}") for i in range(4)]
    jobs = enqueue_many([_known(p, d) for p, d in files], client=cluster.client)
    gate = tmp_path / "gate"
    gate.write_text(jobs[0].id)
    worker = cluster.start_worker(env={GATE_ENV: str(gate)})
    wait_until(Path(f"{gate}.held").exists, 60, "the batch holds after its first job")
    server.stop()
    Path(f"{gate}.release").touch()  # the batch goes on and finds Redis gone
    wait_until(partial(_logged, worker, "Connection to Redis lost"), 60,
               "the outcomes' write is retried")  # fmt: skip
    server.start()
    for job, (_, data) in zip(jobs, files, strict=True):
        assert job.wait(timeout=120).digest == Digest.from_bytes(data), cluster.logs()
    log = worker.log_text()
    assert "{'ended': 4, 'left': 0}" in log  # written by the batch itself, once back
    assert all(f"{TASK_INGEST}[{j.id}]" not in log for j in jobs)


@pytest.mark.slow
def test_a_redelivered_batch_whose_worker_cannot_open_its_store_waits_on_the_queue(
    cluster: Cluster,
) -> None:
    """A redelivered batch copy whose pool process cannot build its runtime (here the
    store root turned into a regular file after the worker started) is requeued, once a
    second, instead of handing every job on blind; once the store is back, the next
    delivery hands on the jobs with no outcome and each succeeds."""
    files_dir = cluster.root.parent / "files"
    files = [_file(files_dir, f"q{i}") for i in range(3)]
    jobs = enqueue_many([_known(p, d) for p, d in files], client=cluster.client)
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        [raw] = r.lpop(QUEUE, 1)  # held back while the worker starts on a good store
        message = json.loads(raw)
        message["headers"]["redelivered"] = True
        message["properties"]["delivery_info"]["redelivered"] = True
        worker = cluster.start_worker()
        away = cluster.root.with_name("root-away")
        cluster.root.rename(away)
        cluster.root.write_text("not a directory")
        r.lpush(QUEUE, json.dumps(message))
        requeued = f"batch {message['headers']['id']}: "
        wait_until(lambda: worker.log_text().count(requeued) >= 2, 60, "requeued twice")
        assert "requeued in 1 s" in worker.log_text()
        assert all(j.state is JobState.QUEUED for j in jobs)  # nothing handed on blind
        cluster.root.unlink()
        away.rename(cluster.root)
    finally:
        r.close()
    for job, (_, data) in zip(jobs, files, strict=True):
        assert job.wait(timeout=60).digest == Digest.from_bytes(data), cluster.logs()
    log = worker.log_text()
    assert "{'ended': 0, 'left': 3}" in log
    assert all(log.count(f"{TASK_INGEST}[{j.id}] received") == 1 for j in jobs)


@pytest.mark.slow
def test_a_batch_whose_worker_cannot_open_its_store_hands_each_job_on(cluster: Cluster) -> None:
    """A first delivery whose pool process cannot build its runtime hands every job on
    as a message of its own, where each ends with the store's error (its kind, not
    Unknown) instead of the batch failing them all at once or losing them."""
    files_dir = cluster.root.parent / "files"
    files = [_file(files_dir, f"h{i}") for i in range(3)]
    worker = cluster.start_worker()  # on a good store: its start-up check passes
    cluster.root.rename(cluster.root.with_name("root-away"))
    cluster.root.write_text("not a directory")
    jobs = enqueue_many([_known(p, d) for p, d in files], client=cluster.client)
    for job in jobs:
        with pytest.raises(errdefs.FailedPrecondition, match="open store"):
            job.wait(timeout=60)
    log = worker.log_text()
    assert "every job handed on" in log
    assert all(f"{TASK_INGEST}[{j.id}]" in log for j in jobs)
