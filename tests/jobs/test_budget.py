"""The disk budget through the embedded ``ingestq`` CLI (a real store root, a real HTTP
server): an ingest of known size that does not fit exits 18 (ResourceExhausted) before
any request reaches the server; one of unknown size stops at the limit, keeps its
prefix, and resumes with a Range request once the budget is raised."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

from ingestq.store import Descriptor, Digest, LocalStore, write_blob
from ingestq.store.budget import measure
from tests.jobs.test_local_ingest import CLI, embedded_env
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.workers import REPO

MIB = 1 << 20


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_a_known_size_that_does_not_fit_exits_18_before_fetching(
    tmp_path: Path, blob_server: BlobServer
) -> None:
    root = tmp_path / "root"
    env = embedded_env(root)
    b = Behaviour(data=os.urandom(3 * MIB))
    url = blob_server.add("/big", b)
    size = str(len(b.data))

    done = run(env, "ingest", url, "--digest", b.digest, "--size", size, "--max-bytes", "2M")
    assert done.returncode == 18, done.stderr  # 10 + gRPC RESOURCE_EXHAUSTED
    assert "ResourceExhausted" in done.stderr
    assert "store budget of 2097152 bytes (2.0 MiB, INGESTQ_MAX_BYTES)" in done.stderr
    assert "0 bytes (0 B) in use, 3145728 more needed" in done.stderr

    env_budget = {**env, "INGESTQ_MAX_BYTES": "1.5M"}
    done = run(env_budget, "ingest", url, "--size", size)  # no digest, the env's budget
    assert done.returncode == 18, done.stderr
    assert "store budget of 1572864 bytes" in done.stderr
    assert blob_server.requests_for("/big") == []  # nothing was fetched
    assert LocalStore(root, fsync=False).list_statuses() == []

    done = run(env, "ingest", url, "--digest", b.digest, "--size", size, "--max-bytes", "4M")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == b.digest


def test_an_unknown_size_stops_at_the_limit_and_resumes_when_the_budget_is_raised(
    tmp_path: Path, blob_server: BlobServer
) -> None:
    root = tmp_path / "root"
    env = embedded_env(root)
    b = Behaviour(data=os.urandom(3 * MIB + 4321), etag='"v1"')
    url = blob_server.add("/grows", b)

    done = run(env, "ingest", url, "--max-bytes", "2M")
    assert done.returncode == 18, done.stderr
    assert "kept for a resume" in done.stderr
    store = LocalStore(root, fsync=False)
    [partial] = store.list_statuses()
    assert partial.offset == 2 * MIB  # stopped exactly at the limit
    assert measure(store.layout) == 2 * MIB
    assert list(store.walk()) == []  # nothing committed partially

    done = run(env, "ingest", url, "--max-bytes", "8M")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == b.digest
    assert blob_server.requests_for("/grows")[-1].range == f"bytes={2 * MIB}-"
    assert store.info(Digest.parse(b.digest)).size == len(b.data)
    assert store.list_statuses() == []


def test_a_malformed_budget_is_invalid_argument(tmp_path: Path) -> None:
    env = embedded_env(tmp_path / "root")
    done = run(env, "ingest", str(tmp_path), "--max-bytes", "lots")
    assert done.returncode == 13, done.stderr  # 10 + INVALID_ARGUMENT
    done = run({**env, "INGESTQ_MIN_FREE": "-1G"}, "ingest", str(tmp_path))
    assert done.returncode == 13, done.stderr


def test_gc_on_pressure_collects_garbage_once_before_refusing(
    tmp_path: Path, blob_server: BlobServer
) -> None:
    """Unreferenced content fills the budget: without INGESTQ_GC_ON_PRESSURE the ingest
    is refused (18); with it, one gc frees the garbage and the ingest goes in."""
    root = tmp_path / "root"
    env = embedded_env(root)
    junk = os.urandom(2 * MIB)
    garbage = Digest.from_bytes(junk)
    write_blob(
        LocalStore(root, fsync=False), "junk", io.BytesIO(junk), Descriptor(garbage, len(junk))
    )
    b = Behaviour(data=os.urandom(2 * MIB))
    url = blob_server.add("/new", b)
    args = ("ingest", url, "--digest", b.digest, "--size", str(len(b.data)))

    done = run({**env, "INGESTQ_MAX_BYTES": "3M"}, *args)
    assert done.returncode == 18, done.stderr
    assert LocalStore(root, fsync=False).exists(garbage)

    done = run({**env, "INGESTQ_MAX_BYTES": "3M", "INGESTQ_GC_ON_PRESSURE": "1"}, *args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == b.digest
    store = LocalStore(root, fsync=False)
    assert not store.exists(garbage)
    assert store.exists(Digest.parse(b.digest))
