"""The job commands of ``ingestq`` against a real Redis and a real worker started the
way docker-compose.yml starts it (``ingestq worker ...``, command read from the file)."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ingestq.jobs.config import Settings
from ingestq.tasks.queue import QueueClient
from tests.servers.redis_server import RedisServer
from tests.servers.util import free_port, wait_until
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.conftest import Cluster
from tests.tasks.workers import REPO, Worker, ping_app, worker_env

CLI = [sys.executable, "-c", "from ingestq.worker.cli import main; main()"]
MiB = 1 << 20


def compose_worker_command() -> list[str]:
    text = (REPO / "docker-compose.yml").read_text()
    m = re.search(r"^  worker:\n(?:    .*\n)*?    command: (\[.*\])$", text, re.MULTILINE)
    assert m is not None
    command: list[str] = json.loads(m.group(1))
    return command


class ComposeWorker(Worker):
    """``ingestq worker --concurrency 2 --metrics-port P`` as in docker-compose.yml."""

    def __init__(self, env: dict[str, str], log_dir: Path, metrics_port: int) -> None:
        super().__init__(env, log_dir)
        command = compose_worker_command()
        assert command[:2] == ["ingestq", "worker"]
        args = command[2:]
        args[args.index("--metrics-port") + 1] = str(metrics_port)
        self.argv = [*CLI, "worker", *args, "--hostname", self.name]


@pytest.fixture(scope="module")
def blob_server() -> Iterator[BlobServer]:
    server = BlobServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, int]]:
    """One Redis (AOF, as in the compose file) and one compose-style worker for the
    module: starting a worker costs seconds."""
    base = tmp_path_factory.mktemp("compose")
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
    port = free_port()
    worker = ComposeWorker(env, base, port)
    cluster.workers.append(worker)
    try:
        worker.start(cluster.app)
        yield cluster, port
    finally:
        worker.stop()
        cluster.client.close()
        cluster.app.close()
        redis.close()


def run(cluster: Cluster, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=cluster.env, cwd=REPO, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def run_on_tty(cluster: Cluster, *args: str) -> str:
    """Run the CLI with its stdout on a pseudo-terminal; return what it printed."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*CLI, *args], env={**cluster.env, "COLUMNS": "160"}, cwd=REPO, stdout=terminal,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(terminal)
        chunks = []
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(30) == 0
    finally:
        os.close(controller)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_ingest_waits_and_prints_the_digest_and_the_worker_exports_metrics(
    compose: tuple[Cluster, int], blob_server: BlobServer
) -> None:
    cluster, port = compose
    b = Behaviour(data=os.urandom(100_000))
    url = blob_server.add("/a", b)
    done = run(cluster, "ingest", url, "--digest", b.digest, "--size", "100000", "--label",
               "team=infra")  # fmt: skip
    assert done.returncode == 0, done.stderr + cluster.logs()
    assert done.stdout.strip() == b.digest
    again = run(cluster, "ingest", url, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["digest"] == b.digest
    labelled = run(cluster, "ingest", url, "--digest", b.digest, "--json")
    assert json.loads(labelled.stdout)["labels"] == {"team": "infra", "ingestq.expire-at": "never"}

    def scrape() -> str | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
        except httpx.HTTPError:
            return None
        return text if 'ingestq_jobs_total{kind="",outcome="succeeded"} 2.0' in text else None

    text = wait_until(scrape, 20, "metrics show the jobs")
    assert 'ingestq_jobs_total{kind="",outcome="deduplicated"} 1.0' in text
    assert "ingestq_bytes_fetched_total 200000.0" in text
    assert "ingestq_job_duration_seconds_bucket" in text


@pytest.mark.slow
def test_detach_then_job_status_and_job_wait(
    compose: tuple[Cluster, int], blob_server: BlobServer
) -> None:
    cluster, _ = compose
    b = Behaviour(data=os.urandom(50_000))
    url = blob_server.add("/d", b)
    detached = run(cluster, "ingest", url, "--digest", b.digest, "--detach", "--json",
                   "--job-id", "my-job")  # fmt: skip
    assert detached.returncode == 0, detached.stderr
    assert json.loads(detached.stdout)["job_id"] == "my-job"
    waited = run(cluster, "job", "wait", "my-job", "--json")
    assert waited.returncode == 0 and json.loads(waited.stdout)["digest"] == b.digest
    status = json.loads(run(cluster, "job", "status", "my-job", "--json").stdout)
    assert status["state"] == "succeeded" and status["offset"] == status["total"] == 50_000
    dup = run(cluster, "ingest", url, "--detach", "--job-id", "my-job")
    assert dup.stdout.strip() == "my-job"
    assert [r.status for r in blob_server.requests_for("/d")] == [200]


@pytest.mark.slow
@pytest.mark.parametrize(("status", "code", "kind"), [(404, 15, "NotFound"), (403, 17,
                         "PermissionDenied"), (401, 26, "Unauthenticated")])  # fmt: skip
def test_failures_exit_with_the_kind_code(
    compose: tuple[Cluster, int], blob_server: BlobServer, status: int, code: int, kind: str
) -> None:
    cluster, _ = compose
    url = blob_server.add(f"/e{status}", Behaviour(data=b"x", status=status))
    failed = run(cluster, "ingest", url, "--json")
    assert failed.returncode == code, failed.stderr
    last = json.loads(failed.stderr.splitlines()[-1])
    assert last["exit_status"] == code
    record = last["error"]
    assert record["kind"] == kind and f"HTTP {status}" in record["message"]


@pytest.mark.slow
def test_unknown_jobs_are_not_found(compose: tuple[Cluster, int]) -> None:
    cluster, _ = compose
    assert run(cluster, "job", "status", "no-such-job").returncode == 15
    assert run(cluster, "job", "wait", "no-such-job").returncode == 15


@pytest.mark.slow
def test_active_lists_live_ingests_and_cancel_stops_one(
    compose: tuple[Cluster, int], blob_server: BlobServer
) -> None:
    cluster, _ = compose
    b = Behaviour(data=os.urandom(4 * MiB), gate_offset=2 * MiB)
    url = blob_server.add("/slow", b)
    job = run(cluster, "ingest", url, "--digest", b.digest, "--size", str(4 * MiB), "--detach")
    job_id = job.stdout.strip()
    assert b.gate_reached.wait(30)

    def listed() -> list[dict[str, object]] | None:
        out = json.loads(run(cluster, "active", "--json").stdout)
        return out if out and out[0]["offset"] == 2 * MiB else None

    (entry,) = wait_until(listed, 20, "the ingest is on the board")
    assert entry["ref"] == f"blob-{b.digest}" and entry["job_id"] == job_id
    assert entry["total"] == 4 * MiB and entry["host"]
    plain = run(cluster, "active")
    assert url in plain.stdout and "2.0 MiB/4.0 MiB" in plain.stdout  # named by its source
    assert "[" not in plain.stdout  # no bars when not on a terminal
    on_tty = run_on_tty(cluster, "active")
    assert " 50.0%" in on_tty and "[" + "#" * 5 in on_tty and "." * 5 + "]" in on_tty

    assert run(cluster, "job", "cancel", job_id).returncode == 0
    b.gate.set()
    waited = run(cluster, "job", "wait", job_id)
    assert waited.returncode == 11 and "Canceled" in waited.stderr  # 10 + CANCELLED
    status = json.loads(run(cluster, "job", "status", job_id, "--json").stdout)
    assert status["state"] == "canceled" and "canceled" in status["reason"]
    assert json.loads(run(cluster, "active", "--json").stdout) == []


@pytest.mark.slow
def test_the_worker_command_refuses_to_run_without_redis(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTQ_")}
    env.update(INGESTQ_ROOT=str(tmp_path), PYTHONPATH=str(REPO))
    out = subprocess.run([*CLI, "worker"], env=env, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 19 and "INGESTQ_REDIS_URL" in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["ingestq", "celery"])
def test_a_worker_whose_store_cannot_be_opened_stops_before_taking_a_job(
    entry: str, redis_url: str, tmp_path: Path
) -> None:
    """A worker whose store root lies under a regular file stops at start, with the
    store's error, and leaves the queued job to a worker that can run it (it used to
    take every job and fail each)."""
    from ingestq.tasks.client import enqueue_ingest

    source = tmp_path / "source"
    source.write_bytes(b"data")
    settings = Settings.from_env(worker_env(redis_url, tmp_path / "good"))
    client = QueueClient(settings)
    try:
        job = enqueue_ingest(str(source), client=client)
        (tmp_path / "file").write_text("a file where the store's directory must be")
        env = worker_env(redis_url, tmp_path / "file" / "root")
        argv = (
            [*CLI, "worker", "--concurrency", "1"]
            if entry == "ingestq"
            else [sys.executable, "-m", "celery", "-A", "ingestq.tasks.app", "worker", "-c", "1"]
        )
        out = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == (19 if entry == "ingestq" else 1), out.stderr  # 10 + 9
        assert "FailedPrecondition" in out.stderr or "failed precondition" in out.stderr
        assert "Not a directory" in out.stderr
        assert job.state.value == "queued"  # untouched, for a worker that can run it
    finally:
        client.close()


@pytest.mark.slow
def test_celery_entry_point_refuses_to_run_without_redis(tmp_path: Path) -> None:
    """``celery -A ingestq.tasks.app worker`` without Redis stops with the reason instead
    of falling back to Celery's default broker (amqp://localhost)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTQ_")}
    env.update(INGESTQ_ROOT=str(tmp_path), PYTHONPATH=str(REPO))
    argv = [sys.executable, "-m", "celery", "-A", "ingestq.tasks.app", "worker", "-c", "1"]
    out = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "INGESTQ_REDIS_URL" in out.stderr, out.stderr
    assert "amqp://" not in out.stderr


@pytest.mark.slow
def test_a_worker_given_another_broker_by_celery_stops_before_taking_a_job(
    redis_url: str, tmp_path: Path
) -> None:
    """Celery's own broker setting (``CELERY_BROKER_URL``) over INGESTQ_REDIS_URL would
    split the worker from the producers' queue: it stops with the reason, no password
    shown."""
    env = worker_env(redis_url, tmp_path / "root")
    env["CELERY_BROKER_URL"] = "amqp://guest:hunter2@127.0.0.1:1//"
    argv = [sys.executable, "-m", "celery", "-A", "ingestq.tasks.app", "worker", "-c", "1"]
    out = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "broker_url is amqp://guest:***@127.0.0.1:1//" in out.stderr
    assert "INGESTQ_BROKER_URL" in out.stderr and "hunter2" not in out.stderr
