"""3000 ingest jobs of 4 KiB blobs through Redis with 2 worker processes, against
Celery's empty task with Celery's default settings on the same Redis and the same
number of worker processes, in the same run; the Redis commands per job; the producer's
enqueue speed (one ``submit_ingest`` per job vs one ``enqueue_many``); and the start-up
of ``ingestq --help`` vs ``python -c pass``.

Each phase fills the queue while the workers' consumers are paused (``cancel_consumer``)
and times from ``add_consumer`` to the last result, so the figure is the workers'
throughput, not the producer's publishing speed (printed separately).

    .venv/bin/python benchmarks/bench_queue.py [--jobs 3000] [--rounds 3] [--no-fsync]
                                               [--window SECONDS]

Starts a private redis-server (AOF everysec, as deployed), two
``celery -A ingestq.tasks.app worker --pool=prefork --concurrency=1`` processes and two
of a Celery app with default settings (broker and result backend on the same Redis,
nothing else set: ``celery -A benchmarks.bench_queue:default_app worker``). Each round
runs, interleaved: N empty tasks on the default app; N ingest jobs (file sources,
expected digest and size) enqueued one by one, one message each; N more enqueued with
``enqueue_many``, which puts up to 64 such jobs in one message (``ingestq.ingest.batch``;
each job keeps its own id and result). Prints the median of the rounds and both ratios
(target >= 0.7). The workers gather the jobs sent one message each into batches of
their own (``tasks/coalesce.py``); ``--window 0`` (``INGESTQ_COALESCE_WINDOW=0``) runs
each as a task of its own instead.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from celery import Celery

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingestq.tasks.app import app  # noqa: E402

EMPTY = "ingestq.bench.empty"
DEFAULT_EMPTY = "bench.default.empty"
_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

#: Celery with its default settings: only the broker and the result backend are set.
default_app = Celery("bench-default", broker=_URL, backend=_URL, set_as_current=False)


@app.task(name=EMPTY)  # type: ignore[untyped-decorator]
def empty() -> None:
    """An empty task on ingestq's app (for comparison)."""


@default_app.task(name=DEFAULT_EMPTY)  # type: ignore[untyped-decorator]
def default_empty() -> None:
    """Celery's empty task with default settings: the baseline."""


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


def _durable_writes(n: int = 1000) -> tuple[float, float]:
    """Blobs per second, in this process, of the raw durable write (``bench_small``'s
    write + fsync + rename + directory fsync) and of ``write_blob`` on a LocalStore (the
    small-blob path every 4 KiB job takes), taking turns in blocks of 100."""
    from benchmarks.bench_small import Raw, Store
    from ingestq.store.digest import Digest
    from ingestq.store.values import Descriptor

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        sinks: dict[str, Raw | Store] = {"raw": Raw(Path(tmp)), "put": Store(Path(tmp), None)}
        spent = dict.fromkeys(sinks, 0.0)
        try:
            for b in range(0, n, 100):
                data = [os.urandom(4096) for _ in range(100)]
                descs = [Descriptor(Digest.from_bytes(d), len(d)) for d in data]
                for name in ("raw", "put") if b % 200 else ("put", "raw"):
                    t0 = time.perf_counter()
                    for d, desc in zip(data, descs, strict=True):
                        sinks[name].write(d, desc)
                    spent[name] += time.perf_counter() - t0
        finally:
            for sink in sinks.values():
                sink.close()
        return n / spent["raw"], n / spent["put"]


def _commands(client: object) -> int:
    """Redis commands served since the last reset (Lua's included), without the
    benchmark's own polling."""
    import redis

    assert isinstance(client, redis.Redis)
    stats = client.info("commandstats")
    skip = ("cmdstat_mget", "cmdstat_config|resetstat", "cmdstat_info")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in skip)


def _startup(runs: int = 15) -> tuple[float, float]:
    """Median seconds of ``ingestq --help`` and of ``python -c pass``, interleaved."""
    cli = str(Path(sys.executable).parent / "ingestq")
    help_s, bare_s = [], []
    for _ in range(runs):
        for cmd, out in (([cli, "--help"], help_s), ([sys.executable, "-c", "pass"], bare_s)):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            out.append(time.perf_counter() - t0)
    return statistics.median(help_s), statistics.median(bare_s)


def _blobs(files: Path, tag: str, n: int) -> list[tuple[str, str]]:
    out = []
    for i in range(n):
        data = os.urandom(4096)
        path = files / f"{tag}-{i}"
        path.write_bytes(data)
        out.append((str(path), "sha256:" + hashlib.sha256(data).hexdigest()))
    return out


def _start_workers(
    target: str, queue: str, prefix: str, env: dict[str, str], base: Path, control: Celery
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    from tests.servers.util import wait_until

    workers, names = [], []
    for n in range(2):
        name = f"{prefix}{n}@local"
        log = open(base / f"{name}.log", "wb")  # noqa: SIM115
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", target, "worker", "--pool=prefork",
             "--concurrency=1", f"--hostname={name}", "--loglevel=WARNING", "-Q", queue,
             "--without-mingle", "--without-gossip", "-I", "benchmarks.bench_queue"],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        wait_until(
            lambda name=name: control.control.ping(destination=[name], timeout=0.3),
            60, f"{name} ready",
        )  # fmt: skip
        names.append(name)
    return workers, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-fsync", action="store_true", help="INGESTQ_FSYNC=0 on workers")
    parser.add_argument("--window", help="INGESTQ_COALESCE_WINDOW on workers (0: no gathering)")
    args = parser.parse_args()

    from ingestq.ingest.request import make_request
    from ingestq.jobs.config import Settings
    from ingestq.tasks.client import enqueue_many
    from ingestq.tasks.queue import QueueClient
    from tests.servers.redis_server import running_redis

    n = args.jobs
    kinds = ("empty", "ingest", "batched", "cmds_empty", "cmds_ingest", "cmds_batched",
             "pub_empty", "pub_single", "pub_many")  # fmt: skip
    figures: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        base = Path(tmp)
        files = base / "files"
        files.mkdir()
        with running_redis(base / "redis") as server:
            env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTQ_")}
            env.update(
                INGESTQ_REDIS_URL=server.url, INGESTQ_ROOT=str(base / "store"),
                INGESTQ_FILE_ROOTS=str(files), PYTHONPATH=str(REPO),
                INGESTQ_FSYNC="0" if args.no_fsync else "1", BENCH_REDIS_URL=server.url,
            )  # fmt: skip
            if args.window is not None:
                env["INGESTQ_COALESCE_WINDOW"] = args.window
            workers: list[subprocess.Popen[bytes]] = []
            control = Celery("bench-control", broker=server.url, set_as_current=False)
            default = Celery("bench-default", broker=server.url, backend=server.url,
                             set_as_current=False)  # fmt: skip
            try:
                ours, our_names = _start_workers(
                    "ingestq.tasks.app", "ingestq", "bench", env, base, control
                )
                workers += ours
                theirs, their_names = _start_workers(
                    "benchmarks.bench_queue:default_app", "celery", "default", env, base, control
                )
                workers += theirs
                for queue, names in (("ingestq", our_names), ("celery", their_names)):
                    control.control.cancel_consumer(queue, destination=names, reply=True)
                settings = Settings.from_env(env)
                producer = QueueClient(settings)
                rclient = producer.result_client

                def drain(
                    queue: str, names: list[str], publish: Callable[[], list[str]]
                ) -> tuple[float, float, float]:
                    """Fill the queue with consumers paused, then time the workers
                    alone from resuming to the last result; (seconds, publish seconds,
                    Redis commands per job)."""
                    rclient.config_resetstat()
                    t0 = time.perf_counter()
                    ids = publish()
                    published = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    control.control.add_consumer(queue, destination=names, reply=True)
                    _wait_results(rclient, ids)
                    took = time.perf_counter() - t0
                    control.control.cancel_consumer(queue, destination=names, reply=True)
                    return took, published, _commands(rclient) / len(ids)

                for r in range(args.rounds):
                    single = _blobs(files, f"s{r}", n)
                    many = _blobs(files, f"m{r}", n)
                    took, pub, cmds = drain("celery", their_names, lambda: [
                        default.send_task(DEFAULT_EMPTY).id for _ in range(n)])  # fmt: skip
                    figures["empty"].append(n / took)
                    figures["pub_empty"].append(n / pub)
                    figures["cmds_empty"].append(cmds)
                    took, pub, cmds = drain("ingestq", our_names, lambda: [
                        producer.submit_ingest(
                            make_request({"type": "file", "path": p}, p, digest=d, size=4096)
                        ).id
                        for p, d in single  # noqa: B023 - called at once
                    ])  # fmt: skip
                    figures["ingest"].append(n / took)
                    figures["pub_single"].append(n / pub)
                    figures["cmds_ingest"].append(cmds)
                    took, pub, cmds = drain("ingestq", our_names, lambda: [
                        j.id for j in enqueue_many(
                            [{"source": p, "digest": d, "size": 4096} for p, d in many],  # noqa: B023
                            client=producer,
                        )
                    ])  # fmt: skip
                    figures["batched"].append(n / took)
                    figures["pub_many"].append(n / pub)
                    figures["cmds_batched"].append(cmds)
                stored = len(list((base / "store" / "blobs" / "sha256").iterdir()))
                assert stored == 2 * n * args.rounds, stored
                producer.close()
            finally:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(30)
                control.close()
                default.close()
    help_s, bare_s = _startup()
    med = {k: statistics.median(v) for k, v in figures.items()}
    e, i, b = med["empty"], med["ingest"], med["batched"]
    fsync = "off" if args.no_fsync else "on"
    print(f"medians of {args.rounds} interleaved rounds, {n} jobs each, 2 worker processes")
    print(f"celery empty task (defaults): {e:8.1f} jobs/s  {med['cmds_empty']:5.1f} Redis "
          f"commands/job")  # fmt: skip
    print(f"ingestq ingest (4 KiB)      : {i:8.1f} jobs/s  {med['cmds_ingest']:5.1f} Redis "
          f"commands/job (one message per job; producer's and worker's, Lua's "
          f"included)")  # fmt: skip
    print(f"ingestq enqueue_many (4 KiB): {b:8.1f} jobs/s  {med['cmds_batched']:5.1f} Redis "
          f"commands/job (batched messages)")  # fmt: skip
    gathered = "off" if args.window is not None and float(args.window) == 0 else "on"
    print(f"ratio ingest/empty          : {i / e:8.2f}  (one message per job; target >= 0.7; "
          f"fsync {fsync}, gathering {gathered})")  # fmt: skip
    print(f"ratio enqueue_many/empty    : {b / e:8.2f}  (target >= 0.7; fsync {fsync})")
    print(f"producer: celery send_task  : {med['pub_empty']:8.1f} jobs/s")
    print(f"producer: submit_ingest     : {med['pub_single']:8.1f} jobs/s (one call per job)")
    print(f"producer: enqueue_many      : {med['pub_many']:8.1f} jobs/s (one call)  "
          f"x{med['pub_many'] / med['pub_single']:.1f}")  # fmt: skip
    print(f"start-up: ingestq --help    : {help_s * 1000:8.1f} ms (python -c pass "
          f"{bare_s * 1000:.1f} ms; target <= 80 ms)")  # fmt: skip
    if not args.no_fsync:
        # A job run as a task of its own costs a worker at least what an empty task does
        # (2 / e seconds) plus one durable write (1 / raw_rate); gathered jobs share the
        # task's part.
        raw_rate, put_rate = _durable_writes()
        print(f"(context) store alone       : raw durable write {raw_rate:.0f} blobs/s, "
              f"write_blob {put_rate:.0f} blobs/s (one process, 4 KiB)")  # fmt: skip
        print(f"(context) ungathered bound  : {2 / (2 + e / raw_rate):8.2f}  the ratio if "
              "each job cost a worker Celery's empty task plus one raw durable write (one "
              "message per job with --window 0)")  # fmt: skip


if __name__ == "__main__":
    main()
