"""The command line loads its command modules on first use: ``ingestq --help``, ``ingestq
content ...``, an embedded ``ingestq ingest FILE`` and an embedded ``ingestq pull`` import
no Celery, kombu, redis or grpc (the queue and ``serve`` do); on a local store neither
asyncio nor the S3 package is loaded either. Queueing a pull loads no HTTP stack, and
neither the local store, gc nor the in-process job backend."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from ingestq.worker.cli import COMMANDS, EXIT_INTERRUPTED, cli, common, load_all
from tests.servers import oci
from tests.servers.registry import Registry
from tests.tasks.workers import REPO

HEAVY = {"celery", "kombu", "redis", "grpc", "google", "billiard", "amqp"}

# Modules a command on a local store has no use for.
LOCAL_ONLY = {"asyncio", "ingestq.s3", "boto3", "botocore"}

# Runs the CLI in a fresh interpreter and prints the modules it imported (top-level
# names and the full names of ingestq's).
PROBE = """
import atexit, json, os, sys
def report():
    names = {m.split(".")[0] for m in sys.modules}
    names |= {m for m in sys.modules if m.startswith("ingestq.")}
    print("MODULES " + json.dumps(sorted(names)), flush=True)
atexit.register(report)
exit_now = os._exit
def _exit(code):  # the CLI's exit without teardown skips atexit
    report()
    exit_now(code)
os._exit = _exit
sys.argv = ["ingestq", *sys.argv[1:]]
from ingestq.worker.cli import main
main()
"""


def imported(root: Path, *args: str, env: dict[str, str] | None = None) -> set[str]:
    """The top-level modules ``ingestq ARGS`` imports in an embedded setup at ``root``."""
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTQ_")}
    run_env.update(INGESTQ_ROOT=str(root), INGESTQ_FSYNC="0", PYTHONPATH=str(REPO))
    run_env.update(env or {})
    p = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=run_env, cwd=REPO, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    line = [x for x in p.stdout.splitlines() if x.startswith("MODULES ")][-1]
    return set(json.loads(line.removeprefix("MODULES ")))


def test_help_imports_no_queue_and_no_grpc(tmp_path: Path) -> None:
    assert imported(tmp_path, "--help") & HEAVY == set()


def test_content_commands_import_no_queue_and_no_grpc(tmp_path: Path) -> None:
    data = tmp_path / "blob"
    data.write_bytes(os.urandom(4096))
    root = tmp_path / "store"
    assert imported(root, "content", "ingest", str(data), "--ref", "r1") & HEAVY == set()
    assert imported(root, "content", "ls") & HEAVY == set()


def test_embedded_ingest_imports_no_queue_and_no_grpc(tmp_path: Path) -> None:
    data = os.urandom(4096)
    src = tmp_path / "blob"
    src.write_bytes(data)
    root = tmp_path / "store"
    assert imported(root, "ingest", "-q", str(src)) & HEAVY == set()
    digest = hashlib.sha256(data).hexdigest()
    assert (root / "blobs" / "sha256" / digest).read_bytes() == data


def test_embedded_pull_imports_no_queue_no_grpc_no_asyncio_and_no_s3(
    tmp_path: Path, registry: Registry
) -> None:
    oci.push_image(registry, "lazy", "v1", [os.urandom(2048), os.urandom(4096)])
    root = tmp_path / "store"
    modules = imported(root, "pull", "--quiet", f"{registry.host}/lazy:v1")
    assert modules & (HEAVY | LOCAL_ONLY) == set()
    assert len(list((root / "blobs" / "sha256").iterdir())) == 4  # manifest, config, 2 layers


def test_commands_on_a_local_store_load_no_asyncio_and_no_s3(tmp_path: Path) -> None:
    data = tmp_path / "blob"
    data.write_bytes(os.urandom(4096))
    root = tmp_path / "store"
    assert imported(root, "ingest", "-q", str(data)) & LOCAL_ONLY == set()
    assert imported(root, "content", "ingest", str(data), "--ref", "r2") & LOCAL_ONLY == set()
    assert imported(root, "content", "ls") & LOCAL_ONLY == set()


def test_queueing_a_pull_loads_no_http_stack_and_no_store(tmp_path: Path, redis_url: str) -> None:
    # The workers fetch and write; the producer only records and publishes the job.
    env = {"INGESTQ_REDIS_URL": redis_url}
    modules = imported(tmp_path / "store", "pull", "--detach", "127.0.0.1:1/app:v1", env=env)
    assert modules & {"httpx", "httpcore", "h11", "grpc"} == set()
    assert "ingestq.fetch.registry.client" not in modules
    unused = {
        "ingestq.store.local",
        "ingestq.store.gc",
        "ingestq.jobs.local",
        "ingestq.ingest.attempt",
    }
    assert modules & unused == set()


def test_serve_still_loads_grpc(tmp_path: Path) -> None:
    assert "grpc" in imported(tmp_path, "serve", "--help")


def test_the_lazy_command_table_matches_the_commands() -> None:
    assert EXIT_INTERRUPTED == common.EXIT_INTERRUPTED
    group = load_all()
    assert set(group.commands) == set(COMMANDS)
    for name, (_module, text) in COMMANDS.items():
        help_text = " ".join((group.commands[name].help or "").split())
        assert help_text.startswith(text), name
    runner_help = CliRunner().invoke(cli, ["--help"]).stdout
    for name in COMMANDS:
        assert f"  {name} " in runner_help, name
