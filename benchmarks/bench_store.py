"""Ingest throughput of the local store against plain ``write`` + ``fsync``.

Both sides write the same bytes, in the same chunks, to the same filesystem, and both
end durable:

* raw:   open, ``os.write`` each chunk, ``fsync``, close;
* store: ``LocalStore.writer(ref, descriptor)``, ``write`` each chunk, ``commit(size,
  digest)`` (which hashes every byte, fsyncs the data, links the blob, fsyncs the
  directory and writes the metadata).

The raw side does not hash; the store must (it verifies the digest), so the ratio
shows what hashing, verification and publishing cost on top of the I/O. The store
hashes in a helper thread overlapped with the write calls, and starts the kernel's
writeback every 8 MiB so that its final fsync is short. For an honest reading the
benchmark also times a third variant, raw write + fsync with that same writeback
trick, and prints the store's ratio to it: that one isolates the cost of hashing and
publishing. Runs alternate (raw, raw+writeback, store, ...) after a ``sync`` so that
none inherits another's writeback; the medians are compared.

    .venv/bin/python benchmarks/bench_store.py --size 1G --repeat 5
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingestq.store import Descriptor, Digest, LocalStore
from ingestq.store.hashfeed import THROUGH_PIECE, chosen_way, update_through
from ingestq.store.local.writer import WRITEBACK_STEP, start_writeback

POOL = 64 << 20
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``1G``, ``512M``, ``4096`` (binary units)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in UNITS else ""
    return int(float(t[: len(t) - len(unit)]) * UNITS[unit])


def chunks(pool: memoryview, size: int, chunk: int) -> Iterator[memoryview]:
    """``size`` bytes in ``chunk``-sized views, cycling through ``pool``."""
    done = 0
    while done < size:
        n = min(chunk, size - done)
        start = done % (len(pool) - chunk + 1)
        yield pool[start : start + n]
        done += n


def raw_run(path: Path, pool: memoryview, size: int, chunk: int, writeback: bool) -> float:
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        written = started = 0
        for view in chunks(pool, size, chunk):
            pos = 0
            while pos < len(view):
                pos += os.write(fd, view[pos:])
            written += pos
            if writeback and start_writeback and written - started >= WRITEBACK_STEP:
                start_writeback(fd, started, written - started)
                started = written
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - t0
    path.unlink()
    return elapsed


def store_run(
    store: LocalStore, digest: Digest, pool: memoryview, size: int, chunk: int, i: int
) -> float:
    t0 = time.perf_counter()
    with store.writer(f"bench-{i}", Descriptor(digest, size)) as w:
        for view in chunks(pool, size, chunk):
            w.write(view)
        w.commit(size, digest)
    elapsed = time.perf_counter() - t0
    store.delete(digest)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="bytes per run (default 1G)")
    parser.add_argument("--chunk", default="1M", help="write size (default 1M)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each (default 5)")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    size, chunk = parse_size(args.size), parse_size(args.chunk)

    base = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    try:
        pool = memoryview(random.Random(0).randbytes(max(POOL, chunk)))
        h = hashlib.sha256()
        t0 = time.perf_counter()
        for view in chunks(pool, size, chunk):
            h.update(view)
        hash_s = time.perf_counter() - t0
        digest = Digest("sha256", h.hexdigest())
        h, buffer = hashlib.sha256(), bytearray(THROUGH_PIECE)
        t0 = time.perf_counter()
        for view in chunks(pool, size, chunk):
            update_through(h, view, buffer)
        through_s = time.perf_counter() - t0
        assert h.hexdigest() == digest.encoded
        store = LocalStore(base / "store", fsync=True)
        mib = size / (1 << 20)
        print(f"{mib:.0f} MiB in {chunk >> 10} KiB writes under {base} ({args.repeat} runs each)")
        print(f"sha256 alone (in memory, one thread): {mib / hash_s:8.1f} MiB/s; through a "
              f"{THROUGH_PIECE >> 10} KiB buffer (update_through): "
              f"{mib / through_s:8.1f} MiB/s")  # fmt: skip
        times: dict[str, list[float]] = {"raw": [], "raw+writeback": [], "store": []}
        for i in range(args.repeat):
            os.sync()
            times["raw"].append(raw_run(base / "raw.bin", pool, size, chunk, False))
            os.sync()
            times["raw+writeback"].append(raw_run(base / "raw.bin", pool, size, chunk, True))
            os.sync()
            times["store"].append(store_run(store, digest, pool, size, chunk, i))
            print(
                f"  run {i + 1}: "
                + "   ".join(f"{k} {mib / v[-1]:7.1f} MiB/s" for k, v in times.items())
                + f"   store/raw {times['raw'][-1] / times['store'][-1]:.3f}"
            )
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"raw write+fsync:           {mib / med['raw']:8.1f} MiB/s (median {med['raw']:.2f} s)"
        )
        wb = med["raw+writeback"]
        print(f"raw write+fsync+writeback: {mib / wb:8.1f} MiB/s (median {wb:.2f} s)")
        st = med["store"]
        print(f"store ingest:              {mib / st:8.1f} MiB/s (median {st:.2f} s)")
        print(f"ratio store/raw:           {med['raw'] / st:.3f} (target >= 0.9)")
        pairs = statistics.median(r / s for r, s in zip(times["raw"], times["store"], strict=True))
        print(f"  median of per-run ratios: {pairs:.3f} (each run's pair shares its moment)")
        print(f"ratio store/raw+writeback: {wb / st:.3f} (hashing and publishing alone)")
        print(f"the store's helper hashed {chosen_way()} (its choice, timed on its first pieces)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
