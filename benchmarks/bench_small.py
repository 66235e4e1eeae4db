"""Small blobs with fsync, store alone, against the raw limit of the same machine.

Every variant commits ``--count`` distinct 4 KiB blobs (``--size``), durably, into a
fresh directory on the same filesystem, in one process:

* raw:    open a temp file, ``write``, ``fsync``, close, ``rename`` under its name,
          ``fsync`` the directory (no hashing: the bytes are named by a counter);
* put:    ``write_blob`` (``store.helpers``) on a ``LocalStore``: the small-blob path
          (hash in memory, one temp file, fsync, link, directory fsync);
* labelled: the same with the label every producer's job carries (gc's
          ``ingestq.expire-at=never``), which the small path stores on the blob file
          as an extended attribute (no metadata file, no blob lock);
* writer: the same ``write_blob`` with the small-blob path turned off
          (``small_blob_max=0``): the ingest directory, ref lock and metadata file of
          the general writer path, for contrast.

Within each run the variants take turns in blocks of ``--block`` blobs (the order
rotating), so load that drifts during a run (a shared disk) hits all of them alike; a
run's ratio is raw's time over the variant's, and the medians over ``--repeat`` runs are
printed (goal for ``put``: >= 0.5).

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
from ingestq.store.gc import requested_labels


class Raw:
    """The limit: write + fsync + rename + fsync(dir), one named temp file per blob."""

    def __init__(self, root: Path) -> None:
        self.directory = root / "raw"
        self.directory.mkdir()
        self.dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.n = 0

    def write(self, data: bytes, desc: Descriptor) -> None:
        self.n += 1
        tmp = self.directory / f".{self.n}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.directory / str(self.n))
        os.fsync(self.dfd)

    def close(self) -> None:
        os.close(self.dfd)


class Store:
    """``write_blob`` on a LocalStore with ``labels`` (``small_blob_max=0``: the writer
    path)."""

    def __init__(
        self, root: Path, small_blob_max: int | None, labels: dict[str, str] | None = None
    ) -> None:
        self.store = LocalStore(root / "store", small_blob_max=small_blob_max)
        self.labels = labels
        self.n = 0

    def write(self, data: bytes, desc: Descriptor) -> None:
        self.n += 1
        write_blob(self.store, f"small-{self.n}", io.BytesIO(data), desc, self.labels)

    def close(self) -> None:
        assert not self.store.list_statuses()


def one_run(count: int, size: int, block: int, where: str, rep: int) -> dict[str, float]:
    """Every variant writes ``count`` fresh blobs, in blocks of ``block`` taken in
    turns (so load that drifts during the run hits all alike); seconds per variant."""
    rng = random.Random(rep)
    names = ["raw", "put", "labelled", "writer"]
    spent = dict.fromkeys(names, 0.0)
    roots = {n: Path(tempfile.mkdtemp(prefix=f"bench-small-{n}-", dir=where)) for n in names}
    sinks: dict[str, Raw | Store] = {
        "raw": Raw(roots["raw"]),
        "put": Store(roots["put"], None),
        "labelled": Store(roots["labelled"], None, requested_labels(None)),
        "writer": Store(roots["writer"], 0),
    }
    try:
        os.sync()
        for b in range(0, count, block):
            batch = [rng.randbytes(size) for _ in range(min(block, count - b))]
            descs = [Descriptor(Digest.from_bytes(d), len(d)) for d in batch]
            turn = b // block % len(names)
            order = names[turn:] + names[:turn]
            for name in order:
                sink = sinks[name]
                t0 = time.perf_counter()
                for data, desc in zip(batch, descs, strict=True):
                    sink.write(data, desc)
                spent[name] += time.perf_counter() - t0
    finally:
        for sink in sinks.values():
            sink.close()
        for root in roots.values():
            shutil.rmtree(root)
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=2000, help="blobs per variant and run")
    ap.add_argument("--size", type=int, default=4096, help="bytes per blob")
    ap.add_argument("--block", type=int, default=50, help="blobs per turn")
    ap.add_argument("--repeat", type=int, default=5, help="runs")
    ap.add_argument("--dir", default=".", help="where to write (default: here)")
    args = ap.parse_args()
    rates: dict[str, list[float]] = {"raw": [], "put": [], "labelled": [], "writer": []}
    ratios: dict[str, list[float]] = {"put": [], "labelled": [], "writer": []}
    for rep in range(args.repeat):
        spent = one_run(args.count, args.size, args.block, args.dir, rep)
        for name, t in spent.items():
            rates[name].append(args.count / t)
        for name in ratios:
            ratios[name].append(spent["raw"] / spent[name])
        line = "  ".join(f"{n} {args.count / t:6.0f}/s" for n, t in spent.items())
        print(f"run {rep + 1}: {line}", flush=True)
    print(f"\n{args.count} x {args.size} B blobs with fsync, median of {args.repeat} runs:")
    print(f"  raw      {statistics.median(rates['raw']):6.0f} blobs/s")
    for name in ratios:
        print(
            f"  {name:8s} {statistics.median(rates[name]):6.0f} blobs/s"
            f"  ratio to raw {statistics.median(ratios[name]):.2f}"
        )


if __name__ == "__main__":
    main()
