"""The embedded default on a full disk: every ingest ends with ResourceExhausted (CLI
exit 18), the second and later ones too, even when the job's own record writes fail
(a job thread that cannot record its outcome still ends the wait with it)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.jobs.config import Settings, open_store
from ingestq.tasks.client import enqueue_ingest
from tests.jobs.test_local_ingest import CLI, embedded_env
from tests.tasks.workers import REPO

PAGE = 4096


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs of its own, unmounted afterwards."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(mount: Path, free_pages: int) -> None:
    """Fill ``mount`` up, then give back ``free_pages`` pages: enough for a job record
    to be created but not for its next write."""
    fd = os.open(mount / "fill", os.O_WRONLY | os.O_CREAT, 0o600)
    written = 0
    try:
        while True:
            written += os.write(fd, b"\0" * PAGE)
    except OSError:
        pass
    os.ftruncate(fd, max(0, written - free_pages * PAGE))
    os.close(fd)


def ingest_api(settings: Settings, source: Path) -> BaseException:
    try:
        enqueue_ingest(str(source), settings=settings).wait(timeout=30)
    except errdefs.ErrdefsError as e:
        return e
    raise AssertionError("the ingest into a full disk succeeded")


@pytest.mark.parametrize("free_pages", [0, 1, 2, 5])
def test_ingest_into_a_full_root_fails_with_resource_exhausted_every_time(
    tmpfs: Path, tmp_path: Path, free_pages: int
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(1 << 20))
    env = embedded_env(tmpfs / "root")
    settings = Settings.from_env(env)
    open_store(settings)  # the root's directories exist; then the disk is full
    fill(tmpfs, free_pages)

    for _ in range(2):
        err = ingest_api(settings, source)
        assert isinstance(err, errdefs.ResourceExhausted), repr(err)
    for _ in range(2):
        done = subprocess.run(
            [*CLI, "ingest", str(source)], env=env, cwd=REPO, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert done.returncode == 18, done.stderr  # 10 + gRPC RESOURCE_EXHAUSTED
        assert "ResourceExhausted" in done.stderr
