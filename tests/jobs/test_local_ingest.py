"""The embedded default: no Redis, jobs run in the ``ingestq`` process itself, and
several CLI processes on one host coordinate through the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ingestq.jobs.api import JobState
from ingestq.jobs.config import Settings
from ingestq.jobs.local import LocalClient
from tests.servers.util import wait_until
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.workers import REPO

MiB = 1 << 20
CLI = [sys.executable, "-c", "from ingestq.worker.cli import main; main()"]


def embedded_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTQ_")}
    env.update(INGESTQ_ROOT=str(root), INGESTQ_FSYNC="0", PYTHONPATH=str(REPO))
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_two_cli_processes_on_one_host_fetch_the_blob_once(
    blob_server: BlobServer, store_root: Path
) -> None:
    b = Behaviour(data=os.urandom(2 * MiB), gate_offset=MiB)
    url = blob_server.add("/blob", b)
    env = embedded_env(store_root)
    args = ["ingest", url, "--digest", b.digest, "--size", str(len(b.data)), "--json"]
    first = cli(env, *args, "--job-id", "job-1")
    assert b.gate_reached.wait(30)
    second = cli(env, *args, "--job-id", "job-2")
    local = LocalClient(Settings.from_env(env))
    job2 = local.job("job-2")
    wait_until(lambda: job2.state is JobState.RETRYING, 30, "the second process waits")
    assert "locked" in (job2.reason or "")

    status = subprocess.run(
        [*CLI, "job", "status", "job-1", "--json"], env=env, cwd=REPO, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    shown = json.loads(status.stdout)
    assert shown["state"] == "started" and shown["offset"] == MiB and shown["total"] == 2 * MiB
    active = subprocess.run(
        [*CLI, "active", "--json"], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    assert [a["ref"] for a in json.loads(active.stdout)] == [f"blob-{b.digest}"]

    b.gate.set()
    out1, err1 = first.communicate(timeout=60)
    out2, err2 = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert json.loads(out1)["digest"] == json.loads(out2)["digest"] == b.digest
    assert [r.status for r in blob_server.requests_for("/blob")] == [200]
    assert blob_server.bytes_served("/blob") == len(b.data)
    assert job2.state is JobState.SUCCEEDED


def test_cancel_from_another_process_stops_the_job_and_a_rerun_resumes(
    blob_server: BlobServer, store_root: Path
) -> None:
    b = Behaviour(data=os.urandom(2 * MiB), gate_offset=MiB)
    url = blob_server.add("/blob", b)
    env = embedded_env(store_root)
    args = ["ingest", url, "--digest", b.digest, "--size", str(len(b.data))]
    first = cli(env, *args, "--job-id", "job-c")
    assert b.gate_reached.wait(30)
    local = LocalClient(Settings.from_env(env))
    wait_until(lambda: (p := local.job("job-c").progress) and p.offset == MiB, 30, "1 MiB in")
    cancel = subprocess.run(
        [*CLI, "job", "cancel", "job-c"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert cancel.returncode == 0, cancel.stderr
    b.gate.set()
    _, err = first.communicate(timeout=60)
    assert first.returncode == 11 and "Canceled" in err  # 10 + gRPC CANCELLED
    assert local.job("job-c").state is JobState.CANCELED
    kept = local.store.status(f"blob-{b.digest}").offset
    assert kept >= MiB  # the ingest is kept for a resume

    rerun = subprocess.run(
        [*CLI, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == b.digest
    requests = blob_server.requests_for("/blob")
    if kept < len(b.data):
        assert len(requests) == 2 and requests[-1].range == f"bytes={kept}-"
    else:
        assert len(requests) == 1  # complete already: committed without fetching
