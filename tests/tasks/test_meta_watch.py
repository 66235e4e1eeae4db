"""A producer's wait on a queued job is woken by the result backend's publish of the
job's meta (:class:`ingestq.tasks.results.MetaWatch`) instead of polling for it."""

from __future__ import annotations

import socket
import threading

from ingestq.jobs.config import Settings
from ingestq.tasks.app import make_app
from ingestq.tasks.redisconn import redis_client
from ingestq.tasks.results import CeleryResults


def test_a_watch_wakes_when_a_worker_stores_the_jobs_meta(redis_url: str) -> None:
    app = make_app(Settings.from_env({"INGESTQ_REDIS_URL": redis_url}), main="meta-watch")
    results = CeleryResults(redis_client(redis_url, socket_timeout=10))
    woke = threading.Event()
    with results.watch("job-1") as watch:

        def sleeper() -> None:
            watch.sleep(600)
            woke.set()

        thread = threading.Thread(target=sleeper, daemon=True)
        thread.start()
        # Celery's Redis backend stores and publishes the meta, as on a worker.
        app.backend.store_result("job-1", {"n": 1}, "SUCCESS")
        assert woke.wait(60)
        thread.join()
    meta = results.meta("job-1")
    assert meta is not None and meta["status"] == "SUCCESS"
    app.close()


def test_a_watch_without_redis_is_a_plain_sleep_and_never_raises() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    results = CeleryResults(redis_client(f"redis://127.0.0.1:{port}/0", socket_timeout=1))
    with results.watch("job-1") as watch:
        watch.sleep(0.01)
        watch.sleep(0.0)
