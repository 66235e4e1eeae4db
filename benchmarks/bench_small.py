"""Small blobs with fsync, store alone, against the raw limit of the same machine.

Every variant commits ``--count`` distinct 4 KiB blobs (``--size``), durably, into a
fresh directory on the same filesystem, in one process:

* raw:    open a temp file, ``write``, ``fsync``, close, ``rename`` under its name,
          ``fsync`` the directory (no hashing: the bytes are named by a counter);
* put:    ``write_blob`` (``store.helpers``) on a ``LocalStore``: the small-blob path
          (hash in memory, one temp file, fsync, link, directory fsync);
* writer: the same ``write_blob`` with the small-blob path turned off
          (``small_blob_max=0``): the ingest directory, ref lock and metadata file of
          the general writer path, for contrast.

Runs are interleaved (raw, put, writer, raw, ...) and the medians compared; the
ratios printed are blobs/s of each store variant over raw's (goal for ``put``: >= 0.5).

    .venv/bin/python benchmarks/bench_small.py --count 2000 --repeat 5
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingestq.store import Descriptor, Digest, LocalStore, write_blob


def raw_run(root: Path, blobs: list[bytes]) -> float:
    directory = root / "raw"
    directory.mkdir()
    t0 = time.perf_counter()
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, data in enumerate(blobs):
            tmp = directory / f".{i}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, directory / str(i))
            os.fsync(dfd)
    finally:
        os.close(dfd)
    return time.perf_counter() - t0


def store_run(root: Path, blobs: list[bytes], small_blob_max: int | None) -> float:
    store = LocalStore(root / "store", small_blob_max=small_blob_max)
    descs = [Descriptor(Digest.from_bytes(b), len(b)) for b in blobs]
    t0 = time.perf_counter()
    for i, (data, desc) in enumerate(zip(blobs, descs, strict=True)):
        write_blob(store, f"small-{i}", io.BytesIO(data), desc)
    elapsed = time.perf_counter() - t0
    assert not store.list_statuses()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=2000, help="blobs per run")
    ap.add_argument("--size", type=int, default=4096, help="bytes per blob")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved runs per variant")
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir here)")
    args = ap.parse_args()
    rng = random.Random(1)
    variants = {"raw": None, "put": None, "writer": 0}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(args.repeat):
        for name, small_max in variants.items():
            blobs = [rng.randbytes(args.size) for _ in range(args.count)]
            root = Path(tempfile.mkdtemp(prefix="bench-small-", dir=args.dir or "."))
            try:
                os.sync()
                t = raw_run(root, blobs) if name == "raw" else store_run(root, blobs, small_max)
            finally:
                shutil.rmtree(root)
            times[name].append(t)
            print(f"run {rep + 1} {name:6s} {args.count / t:8.0f} blobs/s", flush=True)
    rate = {name: args.count / statistics.median(ts) for name, ts in times.items()}
    print(f"\n{args.count} x {args.size} B blobs with fsync, median of {args.repeat} runs:")
    for name in variants:
        print(f"  {name:6s} {rate[name]:8.0f} blobs/s  ratio to raw {rate[name] / rate['raw']:.2f}")


if __name__ == "__main__":
    main()
