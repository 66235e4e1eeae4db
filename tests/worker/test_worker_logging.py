"""``ingestq worker`` as an operator runs it: Celery's options passed through (``-E``,
``--without-gossip``), the banner naming root, file roots and metrics port, expected job
outcomes logged without a traceback, ``--json-logs``, and a real Flower seeing the
tasks with their arguments and outcomes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingestq import errdefs
from ingestq.jobs.config import Settings
from ingestq.tasks.client import enqueue_ingest
from ingestq.tasks.queue import QueueClient
from tests.servers.redis_server import RedisServer
from tests.servers.util import free_port, wait_until
from tests.tasks.conftest import Cluster
from tests.tasks.workers import REPO, Worker, ping_app, worker_env

CLI = [sys.executable, "-c", "from ingestq.worker.cli import main; main()"]

pytestmark = pytest.mark.slow


class CliWorker(Worker):
    """``ingestq worker --pool solo --json-logs -E --without-mingle --without-gossip``."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(env, log_dir)
        self.argv = [
            *CLI, "worker", "--pool", "solo", "-n", self.name, "--json-logs", "-E",
            "--without-mingle", "--without-gossip",
        ]  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("logging")
    redis = RedisServer(base / "redis")
    redis.start()
    root = base / "store"
    root.mkdir()
    (base / "files").mkdir()
    env = worker_env(redis.url, root)
    cluster = Cluster(
        redis.url, root, env, ping_app(redis.url), QueueClient(Settings.from_env(env)), [],
        base,
    )  # fmt: skip
    worker = CliWorker(env, base)
    cluster.workers.append(worker)
    try:
        worker.start(cluster.app)
        yield cluster
    finally:
        worker.stop()
        cluster.client.close()
        cluster.app.close()
        redis.close()


def json_lines(worker: Worker) -> list[dict[str, Any]]:
    out = []
    for line in worker.log_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_the_banner_names_root_file_roots_and_metrics_and_events_are_on(cluster: Cluster) -> None:
    text = cluster.workers[0].log_text()
    files = cluster.root.parent / "files"
    assert f"store root {cluster.root}, file roots {files}, metrics port off" in text
    assert "task events: ON" in text


def test_an_expected_failure_is_one_json_info_line_with_its_kind_and_no_traceback(
    cluster: Cluster,
) -> None:
    outside = cluster.root.parent / "outside.bin"
    outside.write_bytes(b"x")
    job = enqueue_ingest(str(outside), client=cluster.client)
    with pytest.raises(errdefs.PermissionDenied):
        job.wait(timeout=60)
    worker = cluster.workers[0]

    def failure_line() -> dict[str, Any] | None:
        lines = [x for x in json_lines(worker) if x.get("job_id") == job.id and "kind" in x]
        return lines[0] if lines else None

    wait_until(lambda: failure_line() is not None, 30, "the failure is logged")
    line = failure_line()
    assert line is not None
    assert line["level"] == "INFO" and line["kind"] == "PermissionDenied"
    assert line["source"] == str(outside) and line["ref"] == job.ref
    assert "raised expected" in line["message"] and "traceback" not in line
    assert "Traceback" not in worker.log_text()


def test_a_succeeded_job_logs_its_digest_in_json(cluster: Cluster) -> None:
    path = cluster.root.parent / "files" / "ok.bin"
    path.write_bytes(os.urandom(1000))
    job = enqueue_ingest(str(path), client=cluster.client)
    digest = str(job.wait(timeout=60).digest)
    worker = cluster.workers[0]
    wait_until(
        lambda: any(x.get("job_id") == job.id and x.get("digest") == digest
                    for x in json_lines(worker)),
        30, "the success is logged with its digest",
    )  # fmt: skip


def test_flower_shows_the_tasks_with_their_arguments_and_outcomes(cluster: Cluster) -> None:
    port = free_port()
    env = {**cluster.env, "FLOWER_UNAUTHENTICATED_API": "true"}
    log = open(cluster.root.parent / "flower.log", "wb")  # noqa: SIM115 - closed below
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "ingestq.tasks.app", "flower",
         f"--port={port}", "--address=127.0.0.1"],
        env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/api/workers?refresh=1", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 60, "flower answers")
        path = cluster.root.parent / "files" / "flower.bin"
        path.write_bytes(os.urandom(500))
        job = enqueue_ingest(str(path), client=cluster.client)
        job.wait(timeout=60)

        def seen() -> dict[str, Any] | None:
            tasks = httpx.get(f"{url}/api/tasks", timeout=5).json()
            task = tasks.get(job.id)
            return task if task and task.get("state") == "SUCCESS" else None

        wait_until(lambda: seen() is not None, 60, "flower shows the task succeeded")
        task = seen()
        assert task is not None
        assert task["name"] == "ingestq.ingest"
        assert str(path) in task["args"] and job.ref in task["args"]
    finally:
        flower.terminate()
        flower.wait(timeout=30)
        log.close()
