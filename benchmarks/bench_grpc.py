#!/usr/bin/env python3
"""``ctr content ingest`` throughput: ingestq's gRPC server vs a containerd daemon.

Usage (as root, from the repository root)::

    python benchmarks/bench_grpc.py [--size-mib 512] [--runs 3]

Starts both servers in the same run, each in its own temp directory on the same
filesystem: ``ingestq serve`` (a real subprocess, fsync on, the host file lock) and a
private ``containerd`` (tests.servers.ContainerdDaemon). Each run pipes a regular file
of ``--size-mib`` MiB into ``ctr -a SOCKET content ingest REF`` (ctr 1.6 sends 1 MiB
WRITEs in lock-step) and times the ``ctr`` process; every run's file differs in its
first bytes, so every run writes and commits new content. Runs alternate between the
servers. Prints each server's best and median MiB/s and the ratio ingestq ÷ containerd
(target >= 1.5).
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers.containerd import ContainerdDaemon  # noqa: E402
from tests.servers.util import ServerProcess, require_binary, wait_until  # noqa: E402

MiB = 1 << 20


def make_source(path: Path, size: int) -> None:
    """A file of ``size`` random bytes (written in 16 MiB pieces)."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n


def stamp(path: Path, run: int) -> None:
    """Make the file's content unique to this run (its first 8 bytes)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, run.to_bytes(8, "big"), 0)
    finally:
        os.close(fd)


def ingest(socket: str, ref: str, source: Path) -> float:
    """Seconds ``ctr content ingest`` takes to send ``source`` under ``ref``."""
    argv = [require_binary("ctr"), "-a", socket, "content", "ingest", ref]
    with open(source, "rb") as stdin:
        start = time.perf_counter()
        done = subprocess.run(argv, stdin=stdin, capture_output=True, check=False)
        elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"ctr content ingest failed: {done.stderr.decode(errors='replace')}")
    return elapsed


def start_ingestq(directory: Path) -> tuple[ServerProcess, str]:
    """``ingestq serve`` on a unix socket in ``directory``; ready when it answers."""
    socket = str(directory / "ingestq.sock")
    argv = [
        sys.executable,
        "-c",
        "from ingestq.worker.cli import main; main()",
        "serve",
        "--address",
        f"unix://{socket}",
        "--root",
        str(directory / "root"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("INGESTQ_FSYNC", None)  # durable commits, like containerd's
    for name in ("INGESTQ_REDIS_URL", "INGESTQ_LOCK_URL"):
        env.pop(name, None)  # host file lock only
    process = ServerProcess("ingestq-serve", argv, directory / "serve.log", env=env)
    process.spawn()
    ctr = require_binary("ctr")

    def answers() -> bool:
        done = subprocess.run([ctr, "-a", socket, "version"], capture_output=True, check=False)
        return done.returncode == 0

    wait_until(answers, 30.0, "ingestq serve", abort=process.exit_reason)
    return process, socket


def describe(name: str, seconds: list[float], size: int) -> tuple[float, str]:
    rates = [size / MiB / s for s in seconds]
    best, median = max(rates), statistics.median(rates)
    runs = ", ".join(f"{r:.0f}" for r in rates)
    return median, f"{name:<10} best {best:7.1f} MiB/s  median {median:7.1f} MiB/s  ({runs})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args(argv)
    size = opts.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="iqbench-", dir="/tmp"))
    daemon = ContainerdDaemon(work / "containerd")
    ingestq: ServerProcess | None = None
    try:
        source = work / "source.bin"
        make_source(source, size)
        daemon.start()
        ingestq, socket = start_ingestq(work / "ingestq")
        servers: dict[str, tuple[str, list[float]]] = {
            "ingestq": (socket, []),
            "containerd": (daemon.address, []),
        }
        run = 0
        for i in range(opts.runs):
            for name, (address, times) in servers.items():
                run += 1
                stamp(source, run)
                times.append(ingest(address, f"bench-{name}-{i}", source))
        print(f"ctr content ingest of {opts.size_mib} MiB, {opts.runs} runs each")
        ours, line = describe("ingestq", servers["ingestq"][1], size)
        print(line)
        theirs, line = describe("containerd", servers["containerd"][1], size)
        print(line)
        print(f"ratio ingestq / containerd (median): {ours / theirs:.2f}  (target >= 1.5)")
        return 0
    finally:
        if ingestq is not None:
            ingestq.stop(timeout=30)
        daemon.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
