#!/usr/bin/env python3
"""The S3 store's ingest throughput vs boto3's own upload of the same bytes to the same
server, in the same run.

Usage (from the repository root)::

    python benchmarks/bench_s3.py [--size-mib 512] [--small 3000] [--runs 3]

Starts a private SeaweedFS (tests.servers.seaweed; the ``weed`` of the test extra).
Large: a regular file of ``--size-mib`` MiB is ingested into an :class:`S3Store`
(``write_blob`` with the expected digest: hashed, uploaded in parts, published with a
conditional CompleteMultipartUpload) and uploaded with boto3's ``upload_file`` (its
default transfer: 8 MiB parts, 10 threads, no hashing of ours). Small: ``--small``
blobs of 4 KiB through ``write_blob`` (one conditional PUT each) vs ``put_object``.
Both sides use one client made by :func:`ingestq.s3.client.make_client`, as the store's
users get it. Each run's content differs (its first 8 bytes), runs alternate which side
goes first; prints medians and the ratios, of the medians and the median of each run's
own ratio (goals: >= 0.9 large, >= 0.7 small). Also prints, for the large ingest, the
CPU seconds this process and the SeaweedFS it started used (``/proc``; a count the
machine's other load hardly moves, unlike the times).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ingestq.s3 import S3Location, S3Store  # noqa: E402
from ingestq.s3.client import make_client  # noqa: E402
from ingestq.store import Descriptor, Digest, write_blob  # noqa: E402
from ingestq.store.testing import FakeRefLocker  # noqa: E402
from tests.servers.seaweed import running_seaweed  # noqa: E402

MiB = 1 << 20


def stamped(path: Path, run: int) -> Descriptor:
    """Make ``path`` unique to this run (its first 8 bytes); its descriptor."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, run.to_bytes(8, "big"), 0)
    finally:
        os.close(fd)
    h = Digest.from_bytes(b"").hasher()
    with open(path, "rb") as f:
        while chunk := f.read(16 * MiB):
            h.update(chunk)
    return Descriptor(Digest("sha256", h.hexdigest()), path.stat().st_size)


def tree_cpu() -> float:
    """CPU seconds (user + system) of this process and its running children (the
    SeaweedFS server), from ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    me, total = os.getpid(), 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(entry) == me or int(fields[1]) == me:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--small", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        tmpdir = Path(tmp)
        src = tmpdir / "src.bin"
        with open(src, "wb") as f:
            for _ in range(args.size_mib // 16):
                f.write(os.urandom(16 * MiB))
        with running_seaweed(tmpdir / "weed") as weed:
            # One client as the store makes it (make_client: its pool, retries, and
            # checksums only when required) for both sides.
            os.environ.update(weed.endpoint.env())
            client = make_client()
            bucket = weed.endpoint.new_bucket()
            store = S3Store(S3Location(bucket, "ingestq"), client, tmpdir, locker=FakeRefLocker())
            large: dict[str, list[float]] = {"ingestq": [], "boto3": []}
            cpu: dict[str, list[float]] = {"ingestq": [], "boto3": []}
            small: dict[str, list[float]] = {"ingestq": [], "boto3": []}
            for run in range(args.runs):

                def ours(run: int = run) -> float:
                    desc = stamped(src, 2 * run)
                    with open(src, "rb") as f:
                        return timed(lambda: write_blob(store, f"bench-{run}", f, desc))

                def theirs(run: int = run) -> float:
                    stamped(src, 2 * run + 1)
                    key = f"boto3/large-{run}"
                    return timed(lambda: client.upload_file(str(src), bucket, key))

                blobs = [
                    run.to_bytes(8, "big") + i.to_bytes(8, "big") + os.urandom(4096 - 16)
                    for i in range(args.small)
                ]

                def ours_small(blobs: list[bytes] = blobs, run: int = run) -> float:
                    def go() -> None:
                        for i, b in enumerate(blobs):
                            d = Descriptor(Digest.from_bytes(b), len(b))
                            write_blob(store, f"small-{run}-{i}", io.BytesIO(b), d)

                    return timed(go)

                def theirs_small(blobs: list[bytes] = blobs, run: int = run) -> float:
                    def go() -> None:
                        for i, b in enumerate(blobs):
                            client.put_object(Bucket=bucket, Key=f"boto3/small-{run}-{i}", Body=b)

                    return timed(go)

                # Alternate which side goes first, so a drifting load favours neither.
                for results, pair in ((large, (ours, theirs)), (small, (ours_small, theirs_small))):
                    sides = list(zip(("ingestq", "boto3"), pair, strict=True))
                    for name, fn in sides if run % 2 == 0 else reversed(sides):
                        before = tree_cpu()
                        results[name].append(fn())
                        if results is large:
                            cpu[name].append(tree_cpu() - before)
                print(
                    f"run {run}: large ingestq {large['ingestq'][-1]:.2f}s boto3 "
                    f"{large['boto3'][-1]:.2f}s; small ingestq {small['ingestq'][-1]:.2f}s "
                    f"boto3 {small['boto3'][-1]:.2f}s",
                    flush=True,
                )
    size = args.size_mib
    lo, lb = statistics.median(large["ingestq"]), statistics.median(large["boto3"])
    so, sb = statistics.median(small["ingestq"]), statistics.median(small["boto3"])
    print(f"ingestq  {size} MiB: {lo:6.2f} s {size / lo:7.1f} MiB/s (median of {args.runs})")
    print(f"boto3    {size} MiB: {lb:6.2f} s {size / lb:7.1f} MiB/s upload_file")
    print(f"ingestq  {args.small} x 4 KiB: {so:6.2f} s {args.small / so:7.0f} blobs/s")
    print(f"boto3    {args.small} x 4 KiB: {sb:6.2f} s {args.small / sb:7.0f} blobs/s put_object")
    # Each run times both sides back to back: on a shared machine whose load drifts,
    # the median of the runs' own ratios is the steadier figure.
    pl = statistics.median(b / o for o, b in zip(large["ingestq"], large["boto3"], strict=True))
    ps = statistics.median(b / o for o, b in zip(small["ingestq"], small["boto3"], strict=True))
    co, cb = statistics.median(cpu["ingestq"]), statistics.median(cpu["boto3"])
    print(f"large: CPU (client + SeaweedFS) ingestq {co:.2f} s, boto3 {cb:.2f} s: {cb / co:.2f}x")
    print(f"large: ingestq / boto3 speed {lb / lo:.2f}x, per-run median {pl:.2f}x (goal >= 0.9)")
    print(f"small: ingestq / boto3 speed {sb / so:.2f}x, per-run median {ps:.2f}x (goal >= 0.7)")


if __name__ == "__main__":
    main()
