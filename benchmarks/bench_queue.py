"""3000 ingest jobs of 4 KiB blobs through Redis with 2 worker processes, against
Celery's empty task on the same Redis and the same workers, in the same run.

Each phase fills the queue while the workers' consumers are paused (``cancel_consumer``)
and times from ``add_consumer`` to the last result, so the figure is the workers'
throughput, not the producer's publishing speed (printed separately).

    .venv/bin/python benchmarks/bench_queue.py [--jobs 3000] [--no-fsync]

Starts a private redis-server (AOF everysec, as deployed) and two
``celery -A tasks.app worker --pool=prefork --concurrency=1`` processes that also load
this module (for the empty task). Phase 1 publishes N empty tasks and waits for all
their results; phase 2 enqueues N ingest jobs (file sources, expected digest and size)
through the producer API and waits for all. Throughput is jobs per second from the
first publish to the last result; prints both and the ratio (target >= 0.7).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingestq.tasks.app import app  # noqa: E402

EMPTY = "ingestq.bench.empty"


@app.task(name=EMPTY)  # type: ignore[untyped-decorator]
def empty() -> None:
    """Celery's empty task: the baseline."""


def _wait_results(client: object, ids: list[str], timeout: float = 600) -> None:
    import redis

    assert isinstance(client, redis.Redis)
    pending = list(ids)
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} results missing")
        keys = [f"celery-task-meta-{i}" for i in pending]
        values = client.mget(keys)
        pending = [i for i, v in zip(pending, values, strict=True) if v is None or
                   b'"SUCCESS"' not in v]  # fmt: skip
        if pending:
            time.sleep(0.05)


def _store_floor(fsync: bool, n: int = 300) -> float:
    """Blobs per second of the store alone (writer, write, commit) in this process."""
    from ingestq.store.digest import Digest
    from ingestq.store.local import LocalStore
    from ingestq.store.values import Descriptor

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        store = LocalStore(tmp, fsync=fsync)
        data = [os.urandom(4096) for _ in range(n)]
        t0 = time.perf_counter()
        for d in data:
            digest = Digest.from_bytes(d)
            w = store.writer(f"blob-{digest}", Descriptor(digest, len(d)))
            w.write(d)
            w.commit(len(d), digest)
        return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--no-fsync", action="store_true", help="INGESTQ_FSYNC=0 on workers")
    args = parser.parse_args()

    from celery import Celery

    from ingestq.ingest.request import make_request
    from ingestq.jobs.config import Settings
    from ingestq.tasks.queue import QueueClient
    from tests.servers.redis_server import running_redis
    from tests.servers.util import wait_until

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        base = Path(tmp)
        files = base / "files"
        files.mkdir()
        blobs = []
        for i in range(args.jobs):
            data = os.urandom(4096)
            path = files / f"b{i}"
            path.write_bytes(data)
            blobs.append((str(path), "sha256:" + hashlib.sha256(data).hexdigest()))
        with running_redis(base / "redis") as server:
            env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTQ_")}
            env.update(
                INGESTQ_REDIS_URL=server.url, INGESTQ_ROOT=str(base / "store"),
                INGESTQ_FILE_ROOTS=str(files), PYTHONPATH=str(REPO),
                INGESTQ_FSYNC="0" if args.no_fsync else "1",
            )  # fmt: skip
            workers = []
            control = Celery("bench-control", broker=server.url, set_as_current=False)
            try:
                for n in range(2):
                    name = f"bench{n}@local"
                    log = open(base / f"{name}.log", "wb")  # noqa: SIM115
                    workers.append(subprocess.Popen(
                        [sys.executable, "-m", "celery", "-A", "ingestq.tasks.app", "worker",
                         "--pool=prefork", "--concurrency=1", f"--hostname={name}",
                         "--loglevel=WARNING", "-Q", "ingestq", "--without-mingle",
                         "--without-gossip", "-I", "benchmarks.bench_queue"],
                        env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                    ))  # fmt: skip
                    wait_until(
                        lambda name=name: control.control.ping(destination=[name], timeout=0.3),
                        60, f"{name} ready",
                    )  # fmt: skip
                settings = Settings.from_env(env)
                producer = QueueClient(settings)
                rclient = producer.result_client

                names = [f"bench{n}@local" for n in range(2)]

                def drain(publish: Callable[[], list[str]]) -> tuple[float, float]:
                    """Fill the queue with consumers paused, then time the workers
                    alone from resuming to the last result (publishing is excluded:
                    it is the producer's speed, not the workers')."""
                    control.control.cancel_consumer("ingestq", destination=names, reply=True)
                    t0 = time.perf_counter()
                    ids = publish()
                    published = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    control.control.add_consumer("ingestq", destination=names, reply=True)
                    _wait_results(rclient, ids)
                    return time.perf_counter() - t0, published

                empty_s, empty_published_s = drain(
                    lambda: [
                        producer.app.send_task(EMPTY, queue="ingestq").id for _ in range(args.jobs)
                    ]
                )
                ingest_s, published_s = drain(
                    lambda: [
                        producer.submit_ingest(
                            make_request({"type": "file", "path": p}, p, digest=d, size=4096)
                        ).id
                        for p, d in blobs
                    ]
                )
                stored = len(list((base / "store" / "blobs" / "sha256").iterdir()))
                assert stored == args.jobs, stored
                producer.close()
            finally:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(30)
                control.close()
    floor = _store_floor(not args.no_fsync)
    e, i = args.jobs / empty_s, args.jobs / ingest_s
    print(f"celery empty task      : {e:8.1f} jobs/s  ({args.jobs} in {empty_s:.2f} s; "
          f"published in {empty_published_s:.2f} s)")  # fmt: skip
    print(f"ingestq ingest (4 KiB) : {i:8.1f} jobs/s  ({args.jobs} in {ingest_s:.2f} s; "
          f"published in {published_s:.2f} s)")  # fmt: skip
    print(f"ratio ingest/empty     : {i / e:8.2f}  (target >= 0.7; fsync "
          f"{'off' if args.no_fsync else 'on'})")  # fmt: skip
    print(
        f"(context) store alone  : {floor:8.1f} blobs/s per process: LocalStore writer + "
        "commit of a 4 KiB blob, no queue; two workers can at most double it"
    )


if __name__ == "__main__":
    main()
