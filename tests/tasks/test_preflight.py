"""The worker's start-up check (``ingestq.tasks.app.preflight``, run on ``worker_init``):
what would make a worker fail every job stops it before it takes one; another Celery
app's worker in the same process is left alone."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from celery import Celery, signals

from ingestq import errdefs
from ingestq.jobs.config import Settings
from ingestq.tasks import app as app_module
from ingestq.tasks.app import make_app, preflight
from tests.tasks.workers import REPO, worker_env


def _settings(tmp_path: Path) -> Settings:
    return Settings.from_env(worker_env("redis://127.0.0.1:1/0", tmp_path / "root"))


def test_a_healthy_configuration_passes_and_opens_the_store(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    preflight(settings, make_app(settings).conf)  # no Redis listens there: none is asked
    assert (tmp_path / "root" / "blobs").is_dir()


def test_celerys_own_broker_read_url_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    conf = make_app(settings).conf
    conf.broker_read_url = "amqp://guest:secret@elsewhere//"
    with pytest.raises(
        errdefs.FailedPrecondition, match=r"broker_read_url is amqp://guest:\*\*\*@"
    ):
        preflight(settings, conf)


def test_what_each_pool_process_builds_is_checked_too(tmp_path: Path) -> None:
    settings = dataclasses.replace(_settings(tmp_path), lease_ttl=0.2)
    with pytest.raises(errdefs.InvalidArgument, match="lease ttl"):
        preflight(settings)


class _Worker:
    """A worker signal's sender as far as the check reads it (Celery's WorkController)."""

    def __init__(self, app: Celery) -> None:
        self.app = app


def test_another_apps_worker_in_the_same_process_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # This process's ingestq app has no Redis: its own worker would be stopped.
    monkeypatch.setitem(app_module.app.conf, "ingestq_settings", Settings.from_env({}))
    theirs = Celery("theirs", set_as_current=False)
    signals.worker_init.send(sender=_Worker(theirs))  # no SystemExit
    with pytest.raises(SystemExit, match="a worker needs Redis"):
        signals.worker_init.send(sender=_Worker(app_module.app))


@pytest.mark.slow
def test_the_reason_reaches_the_workers_log_file(redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where the store's directory must be")
    env = worker_env(redis_url, tmp_path / "file" / "root")
    log = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "celery", "-A", "ingestq.tasks.app", "worker", "-c", "1",
            "-f", str(log)]  # fmt: skip
    out = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "ingestq worker cannot start: open store" in log.read_text()
