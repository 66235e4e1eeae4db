"""Small local-file jobs submitted one message each are gathered by a real worker's
consumer and run as batches in its pool (``tasks/coalesce.py``): each job keeps its own
result, errdefs kind and meta; other jobs run as Celery runs any task; a pool process
killed mid-batch loses no job; ``INGESTQ_COALESCE_WINDOW=0`` turns it off."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from ingestq import errdefs
from ingestq.jobs.api import IngestJob, JobState
from ingestq.jobs.config import Settings
from ingestq.store.digest import Digest
from ingestq.store.local import LocalStore
from ingestq.tasks.batching import BATCH_BLOB_MAX
from ingestq.tasks.client import enqueue_ingest
from ingestq.tasks.names import TASK_INGEST
from tests.servers.redis_server import RedisFactory
from tests.servers.util import wait_until
from tests.tasks.conftest import Cluster, ClusterFactory
from tests.tasks.failsource import GATE_ENV
from tests.tasks.workers import Worker

#: A window long enough that every message already queued when a worker starts is
#: gathered while the first one waits, however slow the machine.
WIDE = {"INGESTQ_COALESCE_WINDOW": "0.5"}


def _file(root: Path, name: str, size: int = 4096) -> tuple[Path, bytes]:
    root.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    (root / name).write_bytes(data)
    return root / name, data


def _submit(cluster: Cluster, path: Path, data: bytes | None) -> IngestJob:
    """One job, one message (``enqueue_ingest``), digest and size given when ``data``."""
    if data is None:
        return enqueue_ingest(str(path), client=cluster.client)
    return enqueue_ingest(
        str(path), digest=str(Digest.from_bytes(data)), size=len(data), client=cluster.client
    )


def _traced(log: str, job_id: str) -> bool:
    """Whether Celery ran ``job_id`` as a task of its own (its trace logs the outcome)."""
    return bool(re.search(rf"{re.escape(TASK_INGEST)}\[{job_id}\] (succeeded|raised|retry)", log))


def _settled_log(worker: Worker, done: Callable[[str], bool], what: str) -> str:
    """The worker's log once ``done`` holds for it: a job's result is visible before
    the lines logged after it (a trace's outcome, the main process's batch line)."""

    def ready() -> str | None:
        log = worker.log_text()
        return log if done(log) else None

    found = wait_until(ready, 30, what)
    assert found is not None
    return found


def _gathered(log: str) -> list[int]:
    return [int(n) for n in re.findall(r"ran (\d+) gathered jobs", log)]


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_jobs_sent_one_by_one_run_gathered_and_each_keeps_its_own_result(
    cluster: Cluster, pool: str
) -> None:
    files_dir = cluster.root.parent / "files"
    small = [_file(files_dir, f"s{i}") for i in range(24)]
    big = _file(files_dir, "big", BATCH_BLOB_MAX + 1)
    unsized = _file(files_dir, "unsized")
    missing = files_dir / "missing"
    jobs = [_submit(cluster, p, d) for p, d in small]
    lost = _submit(cluster, missing, b"never written")
    alone = [_submit(cluster, *big), _submit(cluster, unsized[0], None)]

    worker = cluster.start_worker(env=WIDE, pool=pool)
    for job, (path, data) in zip([*jobs, *alone], [*small, big, unsized], strict=True):
        info = job.wait(timeout=60)
        assert info.digest == Digest.from_bytes(data), cluster.logs()
        assert (cluster.root / "blobs" / "sha256" / info.digest.encoded).read_bytes() == data
        meta = cluster.client.meta(job.id)
        assert meta is not None and meta["status"] == "SUCCESS"
        assert meta["name"] == TASK_INGEST and meta["worker"] == worker.name
        assert meta["args"][0]["source"] == {"type": "file", "path": str(path)}
    with pytest.raises(errdefs.NotFound):
        lost.wait(timeout=60)
    assert lost.state is JobState.FAILED
    log = _settled_log(
        worker,
        lambda log: all(_traced(log, j.id) for j in alone) and sum(_gathered(log)) >= len(jobs) + 1,
        "the lines of every job",
    )
    assert not any(_traced(log, j.id) for j in [*jobs, lost]), log
    gathered = _gathered(log)
    assert sum(gathered) == len(jobs) + 1 and max(gathered) > 1, gathered


def test_a_gathered_job_whose_ref_has_another_writer_runs_alone_once(cluster: Cluster) -> None:
    """The batch hands it on as a message of its own, which the worker must not gather
    again (it would hand it on again, for ever)."""
    files_dir = cluster.root.parent / "files"
    free, busy = _file(files_dir, "free"), _file(files_dir, "busy")
    jobs = [_submit(cluster, *free), _submit(cluster, *busy)]
    writer = LocalStore(cluster.root, fsync=False).writer(jobs[1].ref)  # holds the ref
    try:
        worker = cluster.start_worker(env=WIDE)
        assert jobs[0].wait(timeout=60).digest == Digest.from_bytes(free[1])
        wait_until(lambda: jobs[1].state is JobState.RETRYING, 30, "the busy job waits")
        assert "locked" in (jobs[1].reason or "")
    finally:
        writer.close()  # its ingest stays, for the job to take over
    assert jobs[1].wait(timeout=60).digest == Digest.from_bytes(busy[1])
    log = _settled_log(worker, lambda log: _traced(log, jobs[1].id), "the busy job's line")
    assert not _traced(log, jobs[0].id), log
    assert _gathered(log) == [2], log  # handed on, it was never gathered again


def test_event_monitors_see_each_gathered_jobs_outcome(cluster: Cluster) -> None:
    """With task events on (``-E``), each gathered job is received, started and then
    succeeded or failed, as a job run on its own would be."""
    files_dir = cluster.root.parent / "files"
    small = [_file(files_dir, f"e{i}") for i in range(5)]
    seen: list[tuple[str, str]] = []
    monitor = Celery("monitor", broker=cluster.redis_url, set_as_current=False)
    with monitor.connection_for_read() as conn:
        receiver = monitor.events.Receiver(
            conn, handlers={"*": lambda e: seen.append((e["type"], e.get("uuid", "")))}
        )
        listening = threading.Event()
        ready = receiver.on_consume_ready

        def on_ready(*args: Any, **kwargs: Any) -> None:
            ready(*args, **kwargs)
            listening.set()

        receiver.on_consume_ready = on_ready
        thread = threading.Thread(target=receiver.capture, kwargs={"limit": None}, daemon=True)
        thread.start()
        assert listening.wait(30), "the monitor listens"
        jobs = [_submit(cluster, p, d) for p, d in small]
        lost = _submit(cluster, files_dir / "missing", b"never written")
        command = [sys.executable, "-m", "celery", "-A", "ingestq.tasks.app", "worker", "-E"]
        worker = cluster.start_worker(env=WIDE, command=command)
        for job in jobs:
            job.wait(timeout=60)
        with pytest.raises(errdefs.NotFound):
            lost.wait(timeout=60)

        def outcomes() -> set[tuple[str, str]]:
            return {(t, i) for t, i in seen if t in ("task-succeeded", "task-failed")}

        expected = {("task-succeeded", j.id) for j in jobs} | {("task-failed", lost.id)}
        wait_until(lambda: outcomes() == expected, 30, "every outcome announced")
        receiver.should_stop = True
        thread.join(30)
    monitor.close()
    for job in [*jobs, lost]:
        assert ("task-started", job.id) in seen
    assert _gathered(worker.log_text()), worker.log_text()


@pytest.mark.parametrize(
    ("window", "pool", "options"),
    [("0", "prefork", []), ("0.5", "threads", []), ("0.5", "prefork", ["--time-limit=600"])],
    ids=["window-0", "threads-pool", "time-limit"],
)
def test_with_no_window_another_pool_or_a_time_limit_every_job_runs_as_celery_runs_it(
    cluster: Cluster, window: str, pool: str, options: list[str]
) -> None:
    """Gathering is off with a window of 0, with a pool whose callbacks run on its own
    threads, and under a time limit (a batch would run under one job's limit)."""
    files_dir = cluster.root.parent / "files"
    small = [_file(files_dir, f"s{i}") for i in range(4)]
    jobs = [_submit(cluster, p, d) for p, d in small]
    command = [sys.executable, "-m", "celery", "-A", "ingestq.tasks.app", "worker", *options]
    worker = cluster.start_worker(
        env={"INGESTQ_COALESCE_WINDOW": window}, pool=pool, command=command
    )
    for job, (_, data) in zip(jobs, small, strict=True):
        assert job.wait(timeout=60).digest == Digest.from_bytes(data), cluster.logs()
    log = _settled_log(worker, lambda log: all(_traced(log, j.id) for j in jobs), "each trace")
    assert not _gathered(log), log


@pytest.mark.parametrize("window", ["-1", "2", "soon"])
def test_a_window_out_of_range_is_refused(window: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="INGESTQ_COALESCE_WINDOW"):
        Settings.from_env({"INGESTQ_COALESCE_WINDOW": window})


@pytest.mark.slow
def test_gathering_goes_on_after_a_redis_restart(
    redis_factory: RedisFactory, cluster_factory: ClusterFactory, store_root: Path
) -> None:
    """A reconnect builds the strategy again: the lost connection's coalescer stops and
    a new one gathers, and no job is lost."""
    server = redis_factory()
    cluster = cluster_factory(server.url, store_root, **WIDE)
    worker = cluster.start_worker()
    files_dir = store_root.parent / "files"
    before = [_file(files_dir, f"b{i}") for i in range(6)]
    for job, (_, data) in zip([_submit(cluster, *f) for f in before], before, strict=True):
        assert job.wait(timeout=60).digest == Digest.from_bytes(data), cluster.logs()
    server.stop()
    server.start()
    after = [_file(files_dir, f"a{i}") for i in range(6)]
    jobs = [_submit(cluster, *f) for f in after]
    for job, (_, data) in zip(jobs, after, strict=True):
        assert job.wait(timeout=120).digest == Digest.from_bytes(data), cluster.logs()
    log = _settled_log(
        worker, lambda log: sum(_gathered(log)) >= len(before) + len(after), "the batch lines"
    )
    assert not any(_traced(log, j.id) for j in jobs), log


@pytest.mark.slow
def test_a_pool_process_killed_mid_gathered_batch_loses_no_job(
    cluster: Cluster, tmp_path: Path
) -> None:
    files_dir = cluster.root.parent / "files"
    files = [_file(files_dir, f"k{i}") for i in range(16)]
    jobs = [_submit(cluster, p, d) for p, d in files]
    gate = tmp_path / "gate"
    gate.write_text(jobs[0].id)  # the pool process holds once the first job is done
    worker = cluster.start_worker(env={**WIDE, GATE_ENV: str(gate)})
    wait_until(Path(f"{gate}.held").exists, 60, "the gathered batch holds after its first job")
    [child] = worker.children()
    os.kill(child, signal.SIGKILL)
    first = Digest.from_bytes(files[0][1])
    assert (cluster.root / "blobs" / "sha256" / first.encoded).exists()
    for job, (_, data) in zip(jobs, files, strict=True):
        assert job.wait(timeout=120).digest == Digest.from_bytes(data), cluster.logs()
    # Requeued, the killed batch's jobs came back redelivered and ran on their own; the
    # batch held more than the job it stopped after.
    log = _settled_log(
        worker,
        lambda log: _traced(log, jobs[0].id) and sum(_traced(log, j.id) for j in jobs) >= 2,
        "the traces of the killed batch's jobs",
    )
    assert "exited with 'signal 9 (SIGKILL)'" in log
