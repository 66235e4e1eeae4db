"""What an operator sees: job ids, progress, retries, Ctrl-C, ``job ls``, ``info`` and
the refusal of a missing root, with the CLI on a real pseudo-terminal
(:mod:`tests.worker.ptyrun`), a misbehaving HTTP server (:mod:`tests.tasks.blobserver`),
a real Redis and real workers."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from ingestq.jobs.config import Settings
from ingestq.store.local import LocalStore
from ingestq.tasks.queue import QueueClient
from ingestq.worker.cli import cli
from tests.servers.redis_server import RedisServer
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.conftest import ClusterFactory, cluster_factory
from tests.tasks.workers import worker_env
from tests.worker.ptyrun import PtyRun

MiB = 1 << 20

__all__ = ["cluster_factory"]  # the fixture, used here


def embedded_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTQ_")}
    env.update(INGESTQ_ROOT=str(root), INGESTQ_FSYNC="0", **extra)
    return env


def cli_json(root: Path, *args: str) -> object:
    result = CliRunner().invoke(cli, [*args, "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_ctrl_c_cancels_an_embedded_ingest_keeps_its_data_and_exits_130(
    tmp_path: Path, blob_server: BlobServer
) -> None:
    data = os.urandom(4 * MiB)
    b = Behaviour(data=data, gate_offset=MiB)
    url = blob_server.add("/big.iso", b)
    root = tmp_path / "store"
    run = PtyRun(["ingest", url], embedded_env(root))
    try:
        job_id = run.expect(r"ingest job ([0-9a-f-]{36})").group(1)
        assert b.gate_reached.wait(30)
        # the status line names the URL and the total the server announced (no --size)
        run.expect(re.escape(url) + r"\s+1\.0 MiB/4\.0 MiB\s+25\.0%")
        assert "\x1b[K" in run.output  # each redraw clears to the end of the line
        run.ctrl_c()
        b.gate.set()
        assert run.wait(60) == 130, run.output
        out = run.output
    finally:
        run.close()
    assert f"interrupted: job {job_id} canceled" in out
    assert "partial data is kept" in out
    assert "\r\x1b[K\r\n" in out or "\r\x1b[Kingestq: interrupted" in out.replace("\r\n", "\n")
    (job,) = cli_json(root, "job", "ls")  # type: ignore[misc]
    assert job["job_id"] == job_id and job["state"] == "canceled" and job["source"] == url
    (status,) = LocalStore(root).list_statuses()
    assert status.offset >= MiB  # kept for a resume


def test_retries_show_reason_attempt_and_next_try_then_fail_with_the_kind(
    tmp_path: Path, blob_server: BlobServer
) -> None:
    url = blob_server.add("/flaky", Behaviour(data=b"x", status=503))
    root = tmp_path / "store"
    run = PtyRun(["ingest", url, "--retries", "2"], embedded_env(root, INGESTQ_RETRY_CAP="1"))
    try:
        run.expect(r"retrying: attempt 1/3 failed: GET \S+/flaky: HTTP 503")
        run.expect(r"retrying: attempt 2/3 failed: .*next try (in|at) ")
        assert run.wait(60) == 24, run.output
        out = run.output
    finally:
        run.close()
    # the error starts at the start of a line, the status line cleared before it
    assert re.search(r"\r\x1b\[Kingestq: Unavailable: GET \S+/flaky: HTTP 503", out), out
    assert len(blob_server.requests_for("/flaky")) == 3


def test_quiet_prints_only_the_digest_and_json_gives_events(
    tmp_path: Path, blob_server: BlobServer
) -> None:
    b = Behaviour(data=os.urandom(100_000))
    url = blob_server.add("/q", b)
    root = tmp_path / "store"
    runner = CliRunner()
    quiet = runner.invoke(cli, ["ingest", url, "-q", "--root", str(root)])
    assert quiet.exit_code == 0 and quiet.stdout.strip() == b.digest and quiet.stderr == ""
    loud = runner.invoke(cli, ["ingest", url, "--root", str(root), "--json"])
    events = [json.loads(line) for line in loud.stderr.splitlines()]
    assert events[0]["event"] == "started" and events[0]["job_kind"] == "ingest"
    assert json.loads(loud.stdout)["job_id"] == events[0]["job_id"]


def test_read_only_commands_refuse_a_missing_root_and_writers_create_it(
    tmp_path: Path, blob_server: BlobServer
) -> None:
    missing = tmp_path / "typo"
    runner = CliRunner()
    for args in (["job", "ls"], ["active"], ["content", "ls"], ["info"]):
        r = runner.invoke(cli, [*args, "--root", str(missing), "--json"])
        assert r.exit_code == 15, (args, r.output)
        record = json.loads(r.stderr.splitlines()[-1])
        assert str(missing) in record["error"]["message"]
        assert record["error"]["code"] == 5 and record["exit_status"] == 15
    assert not missing.exists()
    url = blob_server.add("/w", Behaviour(data=b"hello"))
    assert runner.invoke(cli, ["ingest", url, "-q", "--root", str(missing)]).exit_code == 0
    info = cli_json(missing, "info")
    assert isinstance(info, dict)
    assert info["mode"] == "embedded" and info["root_exists"] and info["blobs"] == 1


def test_embedded_active_has_job_id_source_and_rate(
    tmp_path: Path, blob_server: BlobServer
) -> None:
    b = Behaviour(data=os.urandom(8 * MiB), trickle=(256 << 10, 0.1))
    url = blob_server.add("/slow.bin", b)
    root = tmp_path / "store"
    run = PtyRun(["ingest", url], embedded_env(root))
    try:
        job_id = run.expect(r"ingest job ([0-9a-f-]{36})").group(1)

        def moving() -> dict[str, object] | None:
            items = cli_json(root, "active")
            assert isinstance(items, list)
            return items[0] if items and items[0]["rate"] > 0 else None

        from tests.servers.util import wait_until

        entry = wait_until(moving, 30, "the ingest shows a rate")
        assert entry["job_id"] == job_id and entry["source"] == url
        run.expect(r"/s\s+ETA \d+s")
        run.ctrl_c()
        assert run.wait(60) == 130
    finally:
        run.close()


def test_info_hides_the_redis_password_and_counts_workers(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    redis.Redis.from_url(redis_server.url).config_set("requirepass", "sekret")
    url = redis_server.url.replace("redis://", "redis://:sekret@")
    root = tmp_path / "store"
    root.mkdir()
    r = CliRunner().invoke(cli, ["info", "--json"], env=worker_env(url, root))
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["mode"] == "queue" and out["workers"] == {}
    assert "sekret" not in r.stdout and out["broker_url"].startswith("redis://:***@127.0.0.1")
    text = CliRunner().invoke(cli, ["info"], env=worker_env(url, root))
    assert "workers:    0 online" in text.stdout and "sekret" not in text.stdout


@pytest.mark.slow
def test_queue_no_worker_is_said_ctrl_c_cancels_and_job_ls_lists(
    redis_url: str, tmp_path: Path, blob_server: BlobServer
) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (tmp_path / "files").mkdir()
    env = worker_env(redis_url, root)
    url = blob_server.add("/never", Behaviour(data=b"x"))
    run = PtyRun(["ingest", url], env)
    try:
        job_id = run.expect(r"ingest job ([0-9a-f-]{36})").group(1)
        run.expect(r"queued: no worker is consuming ingestq")
        run.ctrl_c()
        assert run.wait(60) == 130, run.output
        assert f"interrupted: job {job_id} canceled" in run.output
    finally:
        run.close()
    client = QueueClient(Settings.from_env(env))
    try:
        assert client.records.cancel_requested(job_id)
        (listed,) = client.jobs()
        assert listed.job_id == job_id and listed.source == url
    finally:
        client.close()
    r = CliRunner().invoke(cli, ["job", "ls", "--json"], env=env)
    assert [j["job_id"] for j in json.loads(r.stdout)] == [job_id]


@pytest.mark.slow
def test_queue_retries_show_attempts_from_the_worker(
    cluster_factory: ClusterFactory, redis_url: str, tmp_path: Path, blob_server: BlobServer
) -> None:
    root = tmp_path / "store"
    root.mkdir()
    cluster = cluster_factory(redis_url, root, INGESTQ_RETRY_CAP="1")
    cluster.start_worker(concurrency=1)
    url = blob_server.add("/down", Behaviour(data=b"x", status=503))
    run = PtyRun(["ingest", url, "--retries", "2"], cluster.env)
    try:
        run.expect(r"retrying: attempt 1/3 failed: GET \S+/down: HTTP 503", 60)
        run.expect(r"retrying: attempt 2/3 failed", 60)
        assert run.wait(60) == 24, run.output + cluster.logs()
    finally:
        run.close()
    assert len(blob_server.requests_for("/down")) == 3
    r = CliRunner().invoke(cli, ["job", "ls", "--state", "failed", "--json"], env=cluster.env)
    (job,) = json.loads(r.stdout)
    assert job["source"] == url and "HTTP 503" in job["reason"]
