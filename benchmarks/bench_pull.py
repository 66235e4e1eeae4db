"""Pull an 8 x 64 MiB image from a local registry three ways, in the same run:

1. ``ingestq``: the pull job through Redis and 2 worker processes
   (``ingestq worker --pool=prefork --concurrency=1`` each), timed from enqueue to the
   pull's result (manifest ingested, 8 layers + config fetched by child jobs, labels,
   ``index.json``) through the producer API, and again as ``ingestq pull --quiet`` (a
   new Python process per pull: its start-up is counted, like ctr's and skopeo's);
2. ``ctr content fetch --plain-http`` into a private ``containerd`` (a fresh temporary
   root per run, started by this script and not timed), timed around the ``ctr`` process;
3. ``skopeo copy --preserve-digests docker://... oci:DIR:TAG``, timed around the process;
4. the machine's limit: one ``curl`` per blob (the 8 layers and the config), all at once,
   from the same registry into files, each followed by ``sync -d`` of its file; the
   manifest by one more ``curl`` first. Timed around the whole shell. ingestq's CLI pulls
   are also given as a fraction of this (target >= 0.8), both through the workers and
   embedded (``ingestq pull`` with no ``INGESTQ_REDIS_URL``: the pull's threads in the
   CLI's own process);
5. a Celery producer process alone: ``python -c`` importing Celery and sending one task
   to the same Redis. A queued CLI cannot finish sooner than the pull through the API
   plus this, so that sum is printed as the queued CLI's best case, against the limit.

    .venv/bin/python benchmarks/bench_pull.py [--layers 8] [--layer-mib 64] [--repeat 3]
                                              [--no-fsync] [--s3]

With ``--s3`` it compares stores instead of tools: the same pull through two clusters
of ``--workers`` workers (each its own Redis), one on a local store and one on an S3
store (``INGESTQ_STORE=s3://...`` on a private SeaweedFS, ``tests.servers.seaweed``),
interleaved, and prints the S3 store's speed as a fraction of the local one's.

Each tool gets a fresh destination for every repetition; the repetitions interleave
the tools so page cache and CPU state are shared fairly, and the median is reported.
Prints each median (seconds, MiB/s) and the ratios: ingestq's speed over containerd's
(target >= 1.5) and over skopeo's (target >= 0.8). Needs root (containerd) and the
Debian packages docker-registry, redis-server, containerd and skopeo.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MiB = 1 << 20
#: A Celery producer and nothing else, as a process: import Celery, send one task to a
#: queue nobody reads (on the benchmark's Redis, argv[1]). What any queued CLI pays
#: before its job can start, whatever it then does.
CELERY_SEND = (
    "import sys; from celery import Celery; "
    "app = Celery('floor', broker=sys.argv[1], set_as_current=False); "
    "app.send_task('bench.floor', queue='bench-floor'); app.close()"
)
#: The ``ingestq`` command as its console script runs it (the installed package's CLI).
CLI = [sys.executable, "-c", "from ingestq.worker.cli import main; main()"]


def _push(registry: object, layers: int, layer_mib: int) -> tuple[str, list[str]]:
    """Push the benchmark image (random, incompressible layers); return its digest and
    the digests of its config and layers."""
    import httpx

    from tests.servers import oci

    chunks = [os.urandom(layer_mib * MiB) for _ in range(layers)]
    image = oci.build_image(chunks)
    with httpx.Client(timeout=300) as client:
        oci.push_built_image(registry, "bench", image, "v1", client=client)  # type: ignore[arg-type]
    blobs = [image.config_descriptor.digest, *(d.digest for d in image.layer_descriptors)]
    return image.digest, blobs


def _curl_script(base_url: str, manifest: str, blobs: list[str], dest: Path) -> str:
    """A shell script fetching the manifest, then every blob at once with ``curl``, each
    made durable with ``sync -d`` of its file; exits non-zero if any fails."""
    accept = "application/vnd.oci.image.manifest.v1+json"
    lines = [
        "set -e",
        f"curl -sSfL -H 'Accept: {accept}' -o {dest}/manifest {base_url}/manifests/{manifest}",
        f"sync -d {dest}/manifest",
        "pids=()",
    ]
    for digest in blobs:
        out = dest / digest.split(":", 1)[1]
        lines.append(f"(curl -sSfL -o {out} {base_url}/blobs/{digest} && sync -d {out}) & "
                     "pids+=($!)")  # fmt: skip
    lines.append('for p in "${pids[@]}"; do wait "$p"; done')
    return "\n".join(lines)


def _start_workers(env: dict[str, str], log_dir: Path, count: int) -> list[subprocess.Popen[bytes]]:
    from celery import Celery

    from tests.servers.util import wait_until

    procs = []
    names = []
    for i in range(count):
        name = f"bench{i}-{uuid.uuid4().hex[:6]}@bench"
        log = open(log_dir / f"worker{i}.log", "ab")  # noqa: SIM115 - lives with the process
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from ingestq.worker.cli import main; main()",
                    "worker",
                    "--pool=prefork",
                    "--concurrency=1",
                    "--loglevel=WARNING",
                    "-n",
                    name,
                ],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        names.append(name)
    app = Celery("bench-ping", broker=env["INGESTQ_REDIS_URL"], set_as_current=False)
    try:
        for name in names:

            def answers(n: str = name) -> object:
                return app.control.ping(destination=[n], timeout=0.5)

            wait_until(answers, 60, f"worker {name} answers ping")
    finally:
        app.close()
    return procs


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    import signal

    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def _empty_store(root: Path) -> None:
    """Remove every blob, ingest, label record and image of a store root, keeping its
    directories (the workers' stores stay valid)."""
    for sub in ("blobs/sha256", "meta/sha256", "ingest", "resume"):
        directory = root / sub
        if directory.is_dir():
            for entry in directory.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.chmod(0o644)
                    entry.unlink()
    (root / "index.json").unlink(missing_ok=True)


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved(
    runners: Mapping[str, Callable[[int], float]], repeat: int
) -> dict[str, list[float]]:
    """Each runner's seconds over ``repeat`` rounds (a runner gets the round's index);
    every round rotates the order, so a drifting load favours none."""
    names = list(runners)
    results: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeat):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            seconds = runners[name](i)
            results[name].append(seconds)
            print(f"  run {i + 1} {name:12} {seconds:6.2f} s", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--layer-mib", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-fsync", action="store_true", help="INGESTQ_FSYNC=0 on workers")
    parser.add_argument("--s3", action="store_true", help="local store vs S3 store (see above)")
    args = parser.parse_args()
    if args.s3:
        _main_s3(args)
        return

    from ingestq.jobs.config import Settings
    from ingestq.tasks.client import enqueue_pull
    from ingestq.tasks.queue import QueueClient
    from tests.servers.containerd import running_containerd
    from tests.servers.redis_server import running_redis
    from tests.servers.registry import running_registry
    from tests.servers.util import require_binary

    total = args.layers * args.layer_mib * MiB
    results: dict[str, list[float]] = {
        "ingestq": [], "ingestq-cli": [], "cli-embedded": [], "containerd": [], "skopeo": [],
        "curl": [], "celery-send": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        base = Path(tmp)
        with (
            running_registry(base / "registry") as registry,
            running_redis(base / "redis") as redis_server,
        ):
            digest, blob_digests = _push(registry, args.layers, args.layer_mib)
            ref = f"{registry.host}/bench:v1"
            print(f"image {ref} {digest}: {args.layers} x {args.layer_mib} MiB", flush=True)
            skopeo = require_binary("skopeo")

            root = base / "ingestq"
            env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTQ_")}
            env.update(
                INGESTQ_REDIS_URL=redis_server.url,
                INGESTQ_ROOT=str(root),
                INGESTQ_FSYNC="0" if args.no_fsync else "1",
                PYTHONPATH=str(REPO),
            )
            # An installed package has its bytecode cached (pip compiles it): let the
            # processes write theirs, as the warm-up pull below does.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            procs = _start_workers(env, base, args.workers)
            client = QueueClient(Settings.from_env(env))
            # Warm both workers' processes (store, Redis and registry clients) on a small
            # image first; the timed pulls then start from an empty store every time.
            warm = f"{registry.host}/warm:v1"
            from tests.servers import oci

            oci.push_image(registry, "warm", "v1", [os.urandom(1024) for _ in range(4)])
            enqueue_pull(warm, client=client).wait(120)

            def run_ingestq(i: int) -> float:
                _empty_store(root)
                seconds = _time(lambda: enqueue_pull(ref, client=client).wait(600))
                blobs = list((root / "blobs" / "sha256").iterdir())
                assert len(blobs) == args.layers + 2, blobs
                return seconds

            def run_ingestq_cli(i: int) -> float:
                _empty_store(root)
                argv = [*CLI, "pull", "--quiet", ref]
                seconds = _time(
                    lambda: subprocess.run(
                        argv, env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL
                    )
                )
                assert len(list((root / "blobs" / "sha256").iterdir())) == args.layers + 2
                return seconds

            embedded_root = base / "embedded"
            embedded_env = {k: v for k, v in env.items() if k != "INGESTQ_REDIS_URL"}
            embedded_env["INGESTQ_ROOT"] = str(embedded_root)

            subprocess.run(  # warm-up: the embedded CLI's bytecode and the page cache
                [*CLI, "pull", "--quiet", warm], env=embedded_env, cwd=REPO, check=True,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip

            def run_cli_embedded(i: int) -> float:
                _empty_store(embedded_root)
                argv = [*CLI, "pull", "--quiet", ref]
                seconds = _time(
                    lambda: subprocess.run(
                        argv, env=embedded_env, cwd=REPO, check=True, stdout=subprocess.DEVNULL
                    )
                )
                blobs = list((embedded_root / "blobs" / "sha256").iterdir())
                assert len(blobs) == args.layers + 2, blobs
                return seconds

            def run_celery_send(i: int) -> float:
                argv = [sys.executable, "-c", CELERY_SEND, redis_server.url]
                return _time(lambda: subprocess.run(argv, env=env, cwd=REPO, check=True))

            def run_curl(i: int) -> float:
                dest = base / f"curl-{i}"
                dest.mkdir()
                script = _curl_script(f"http://{registry.host}/v2/bench", digest,
                                      blob_digests, dest)  # fmt: skip
                seconds = _time(lambda: subprocess.run(["bash", "-c", script], check=True))
                assert len(list(dest.iterdir())) == args.layers + 2
                shutil.rmtree(dest)
                return seconds

            def run_containerd(i: int) -> float:
                # A fresh daemon (and root) per run: containerd keeps deleted content on
                # disk until its GC runs and would then skip the fetch.
                with running_containerd(base / f"containerd-{i}") as containerd:
                    seconds = _time(
                        lambda: containerd.ctr("content", "fetch", "--plain-http", ref, timeout=600)
                    )
                    listed = containerd.ctr("content", "ls", "-q").stdout.split()
                shutil.rmtree(base / f"containerd-{i}", ignore_errors=True)
                assert len(listed) == args.layers + 2, listed
                return seconds

            def run_skopeo(i: int) -> float:
                dest = base / f"skopeo-{i}"
                argv = [skopeo, "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                        "--preserve-digests", f"docker://{ref}", f"oci:{dest}:v1"]  # fmt: skip
                seconds = _time(lambda: subprocess.run(argv, check=True))
                assert len(list((dest / "blobs" / "sha256").iterdir())) == args.layers + 2
                shutil.rmtree(dest)
                return seconds

            runners = {
                "ingestq": run_ingestq,
                "ingestq-cli": run_ingestq_cli,
                "cli-embedded": run_cli_embedded,
                "containerd": run_containerd,
                "skopeo": run_skopeo,
                "curl": run_curl,
                "celery-send": run_celery_send,
            }
            try:
                results.update(_interleaved(runners, args.repeat))
            finally:
                client.close()
                _stop(procs)

    print()
    medians = {tool: statistics.median(times) for tool, times in results.items()}
    for tool, seconds in medians.items():
        speed = "" if tool == "celery-send" else f"{total / MiB / seconds:7.1f} MiB/s"
        print(f"{tool:12} {seconds:6.2f} s  {speed:>12}  (median of "
              f"{len(results[tool])})")  # fmt: skip
    vs_containerd = medians["containerd"] / medians["ingestq"]
    vs_skopeo = medians["skopeo"] / medians["ingestq"]
    print(f"ingestq / containerd speed: {vs_containerd:.2f}x (target >= 1.5)")
    print(f"ingestq / skopeo speed:     {vs_skopeo:.2f}x (target >= 0.8)")
    cli = medians["ingestq-cli"]
    embedded = medians["cli-embedded"]
    print(
        f"with the CLI's process start (ingestq pull): {medians['containerd'] / cli:.2f}x "
        f"containerd, {medians['skopeo'] / cli:.2f}x skopeo (target >= 1.8x containerd)"
    )
    print(
        f"embedded (ingestq pull, no Redis): {medians['containerd'] / embedded:.2f}x "
        f"containerd, {medians['skopeo'] / embedded:.2f}x skopeo"
    )
    limit = medians["curl"]
    print(
        f"of the limit (parallel curl + sync -d, {limit:.2f} s): ingestq pull "
        f"{limit / cli:.2f}, embedded {limit / embedded:.2f} (target >= 0.8)"
    )
    floor = medians["celery-send"]
    best = medians["ingestq"] + floor
    print(
        f"a Celery producer process alone (import, one send_task): {floor:.2f} s; the queued "
        f"CLI at best (the pull through the API plus that): {best:.2f} s, {limit / best:.2f} "
        f"of the limit; the CLI's own cost beyond it: {cli - best:+.2f} s"
    )


def _main_s3(args: argparse.Namespace) -> None:
    """The ``--s3`` comparison: the pull into a local store vs into an S3 store."""
    from ingestq.jobs.config import Settings
    from ingestq.tasks.client import enqueue_pull
    from ingestq.tasks.queue import QueueClient
    from tests.servers import oci
    from tests.servers.redis_server import running_redis
    from tests.servers.registry import running_registry
    from tests.servers.seaweed import running_seaweed

    total = args.layers * args.layer_mib * MiB
    results: dict[str, list[float]] = {"local": [], "s3": []}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        base = Path(tmp)
        with (
            running_registry(base / "registry") as registry,
            running_redis(base / "redis-local") as redis_local,
            running_redis(base / "redis-s3") as redis_s3,
            running_seaweed(base / "weed") as weed,
        ):
            digest, _ = _push(registry, args.layers, args.layer_mib)
            ref = f"{registry.host}/bench:v1"
            print(f"image {ref} {digest}: {args.layers} x {args.layer_mib} MiB", flush=True)
            s3 = weed.endpoint.client()
            bucket = weed.endpoint.new_bucket()
            common = {k: v for k, v in os.environ.items() if not k.startswith("INGESTQ_")}
            common.update(
                INGESTQ_FSYNC="0" if args.no_fsync else "1", PYTHONPATH=str(REPO)
            )  # fmt: skip
            roots = {"local": base / "local", "s3": base / "s3-host"}
            envs = {
                "local": {**common, "INGESTQ_REDIS_URL": redis_local.url,
                          "INGESTQ_ROOT": str(roots["local"])},
                "s3": {**common, **weed.endpoint.env(), "INGESTQ_REDIS_URL": redis_s3.url,
                       "INGESTQ_ROOT": str(roots["s3"]), "INGESTQ_STORE": f"s3://{bucket}/bench"},
            }  # fmt: skip
            procs: list[subprocess.Popen[bytes]] = []
            clients: dict[str, QueueClient] = {}
            oci.push_image(registry, "warm", "v1", [os.urandom(1024) for _ in range(4)])
            try:
                for kind, env in envs.items():
                    log_dir = base / f"logs-{kind}"
                    log_dir.mkdir()
                    procs += _start_workers(env, log_dir, args.workers)
                    clients[kind] = QueueClient(Settings.from_env(env))
                    # Warm the workers (store, Redis, registry and S3 clients) first.
                    enqueue_pull(f"{registry.host}/warm:v1", client=clients[kind]).wait(120)

                def empty_s3() -> None:
                    _empty_store(roots["s3"])
                    pages = s3.get_paginator("list_objects_v2").paginate(
                        Bucket=bucket, Prefix="bench/"
                    )
                    for page in pages:
                        for obj in page.get("Contents") or ():
                            s3.delete_object(Bucket=bucket, Key=obj["Key"])

                def s3_blobs() -> int:
                    got = s3.list_objects_v2(Bucket=bucket, Prefix="bench/blobs/sha256/")
                    return int(got.get("KeyCount", 0))

                def run(kind: str) -> float:
                    if kind == "s3":
                        empty_s3()
                    else:
                        _empty_store(roots["local"])
                    seconds = _time(lambda: enqueue_pull(ref, client=clients[kind]).wait(600))
                    if kind == "s3":
                        count = s3_blobs()
                    else:
                        count = len(list((roots["local"] / "blobs" / "sha256").iterdir()))
                    assert count == args.layers + 2, (kind, count)
                    return seconds

                def runner(kind: str) -> Callable[[int], float]:
                    return lambda _: run(kind)

                results.update(_interleaved({k: runner(k) for k in results}, args.repeat))
            finally:
                for c in clients.values():
                    c.close()
                _stop(procs)

    print()
    medians = {kind: statistics.median(times) for kind, times in results.items()}
    for kind, seconds in medians.items():
        print(f"{kind:6} store {seconds:6.2f} s  {total / MiB / seconds:7.1f} MiB/s  (median "
              f"of {len(results[kind])}, {args.workers} workers)")  # fmt: skip
    print(f"S3 store / local store speed: {medians['local'] / medians['s3']:.2f}x")


if __name__ == "__main__":
    main()
