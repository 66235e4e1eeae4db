"""Real Celery worker processes for the tests: ``celery -A tasks.app worker`` (or
``ingestq worker``) subprocesses pointed at a test Redis and a temporary store root.

Readiness is a ``control.ping`` reply from the worker's node name, never a sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from celery import Celery

from ingestq.tasks.app import celery_url
from tests.servers.util import wait_until

REPO = Path(__file__).resolve().parents[2]


def worker_env(redis_url: str, root: Path, **extra: str) -> dict[str, str]:
    """The environment of a test worker (and of a producer that talks to it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTQ_")}
    env.update(
        INGESTQ_REDIS_URL=redis_url,
        INGESTQ_ROOT=str(root),
        INGESTQ_FILE_ROOTS=str(root.parent / "files"),
        INGESTQ_FSYNC="0",
        INGESTQ_LEASE_TTL="3",
        INGESTQ_LOCK_WAIT_CAP="0.5",
        INGESTQ_RETRY_CAP="1",
        INGESTQ_HTTP_READ_TIMEOUT="20",
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


class Worker:
    """One worker process."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        concurrency: int = 1,
        pool: str = "prefork",
        command: Sequence[str] | None = None,
        name: str | None = None,
    ) -> None:
        self.name = name or f"w{uuid.uuid4().hex[:6]}@test"
        self.env = dict(env)
        self.log_path = log_dir / f"{self.name.split('@')[0]}.log"
        base = command or [sys.executable, "-m", "celery", "-A", "ingestq.tasks.app", "worker"]
        self.argv = [
            *base,
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--hostname={self.name}",
            "--loglevel=INFO",
            "-Q",
            "ingestq",
            "--without-mingle",
            "--without-gossip",
            "-I",
            "tests.tasks.failsource",
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, app: Celery, timeout: float = 30.0) -> Worker:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.argv, env=self.env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_until(
            lambda: app.control.ping(destination=[self.name], timeout=0.3),
            timeout,
            f"worker {self.name} answers ping",
            abort=self._exit_reason,
        )
        return self

    def _exit_reason(self) -> str | None:
        if self.process is not None and self.process.poll() is not None:
            return f"worker exited with {self.process.returncode}:\n{self.log_text()[-3000:]}"
        return None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def children(self) -> list[int]:
        """PIDs of the pool processes."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> None:
        """Kill the worker and its pool (the tests need no graceful drain: a warm or
        even a cold Celery shutdown takes seconds per worker)."""
        p = self.process
        if p is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


def ping_app(redis_url: str) -> Celery:
    """A bare app on ``redis_url`` for control commands."""
    return Celery("ping", broker=celery_url(redis_url), set_as_current=False)


def dump(workers: Sequence[Worker]) -> str:
    return "\n".join(f"--- {w.name}\n{w.log_text()[-4000:]}" for w in workers)


__all__ = ["Any", "Worker", "dump", "ping_app", "worker_env"]
