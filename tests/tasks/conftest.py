"""Fixtures of the queue tests: the misbehaving blob server, a store root, worker
processes on a test Redis, and a producer client for them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from ingestq.jobs.config import Settings
from ingestq.tasks.client import enqueue_ingest
from ingestq.tasks.queue import QueueClient
from tests.tasks.workers import Worker, dump, ping_app, worker_env


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    (tmp_path / "files").mkdir()
    return root


@dataclass
class Cluster:
    """Workers on one Redis and store root, and a producer for them."""

    redis_url: str
    root: Path
    env: dict[str, str]
    app: Celery
    client: QueueClient
    workers: list[Worker]
    log_dir: Path

    def start_worker(self, **kw: Any) -> Worker:
        env = dict(self.env)
        env.update(kw.pop("env", {}))
        w = Worker(env, self.log_dir, **kw)
        self.workers.append(w)
        try:
            return w.start(self.app)
        except Exception:
            print(dump([w]))
            raise

    def logs(self) -> str:
        return dump(self.workers)

    def ingest_a_file(self) -> str:
        """Enqueue the ingest of a fresh 10 kB file under the root's ``files/`` and
        check the digest its result names; the job's id."""
        data = os.urandom(10_000)
        path = self.root.parent / "files" / "blob"
        path.write_bytes(data)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        job = enqueue_ingest(str(path), digest=digest, size=len(data), client=self.client)
        assert str(job.wait(timeout=60).digest) == digest, self.logs()
        return job.id


ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[ClusterFactory]:
    made: list[Cluster] = []

    def make(redis_url: str, root: Path, **env: str) -> Cluster:
        full = worker_env(redis_url, root, **env)
        settings = Settings.from_env(full)
        c = Cluster(
            redis_url, root, full, ping_app(redis_url), QueueClient(settings), [],
            tmp_path,
        )  # fmt: skip
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            for w in c.workers:
                w.stop()
            c.client.close()
            c.app.close()


@pytest.fixture
def cluster(cluster_factory: ClusterFactory, redis_url: str, store_root: Path) -> Cluster:
    """A producer on the session Redis (flushed) with no workers yet."""
    return cluster_factory(redis_url, store_root)
