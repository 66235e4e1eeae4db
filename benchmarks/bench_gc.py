"""Garbage collection over a store of 10,000 blobs and 100 images, against a plain walk.

The store holds 100 recorded OCI images (a manifest, a config and 78 layers each, 8,000
blobs) and 2,000 blobs nothing references. Timed, each a median over ``--repeat`` runs:

* baseline: ``os.scandir`` over ``blobs/sha256`` and a ``stat`` of every blob file (the
  least any collector must do to see what is there);
* gc dry run: :func:`ingestq.store.gc.collect` with ``dry_run`` (scan, labels, images,
  leases, the walk of every manifest: the mark alone), over all 10,000 blobs;
* gc: a real run that removes the 2,000 unreferenced blobs (rewritten before each run),
  the sweep included (locks, re-mark per batch, unlinks).

Prints time per run and per blob, and the ratios to the baseline.

    .venv/bin/python benchmarks/bench_gc.py --repeat 5
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingestq.store import Descriptor, Digest, LocalStore
from ingestq.store.gc import GcOptions, collect
from ingestq.store.helpers import write_blob
from ingestq.store.images import ImageIndex

IMAGES = 100
LAYERS = 78
ORPHANS = 2_000
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def put(store: LocalStore, data: bytes) -> Digest:
    digest = Digest.from_bytes(data)
    write_blob(store, f"b-{digest}", io.BytesIO(data), Descriptor(digest, len(data)))
    return digest


def build(root: Path) -> LocalStore:
    """The store of the module docstring, without its orphans."""
    store = LocalStore(root, fsync=False)
    index = ImageIndex(root)
    for i in range(IMAGES):
        config = json.dumps({"os": "linux", "architecture": "amd64", "image": i}).encode()
        c = put(store, config)
        layers = []
        for j in range(LAYERS):
            data = f"image {i} layer {j} ".encode() * 8
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                           "digest": str(put(store, data)), "size": len(data)})  # fmt: skip
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": str(c), "size": len(config)},
            "layers": layers,
        }).encode()  # fmt: skip
        m = put(store, manifest)
        index.put(f"bench/image{i}:v1", Descriptor(m, len(manifest), MANIFEST))
    return store


def add_orphans(store: LocalStore, seed: int) -> None:
    for k in range(ORPHANS):
        put(store, f"orphan {seed} {k}".encode())


def baseline(root: Path) -> float:
    started = time.perf_counter()
    n = 0
    with os.scandir(root / "blobs" / "sha256") as it:
        for entry in it:
            entry.stat(follow_symlinks=False)
            n += 1
    elapsed = time.perf_counter() - started
    assert n == IMAGES * (LAYERS + 2) + ORPHANS, n
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="Where to build the store.")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-gc-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        store = build(workdir / "store")
        add_orphans(store, 0)
        total = IMAGES * (LAYERS + 2) + ORPHANS
        print(f"built {total} blobs, {IMAGES} images in {time.perf_counter() - t0:.1f}s")
        base, dry, real = [], [], []
        for r in range(args.repeat):
            base.append(baseline(store.root))
            started = time.perf_counter()
            report = collect(store, GcOptions(dry_run=True))
            dry.append(time.perf_counter() - started)
            assert len(report.blobs) == ORPHANS, len(report.blobs)
            started = time.perf_counter()
            report = collect(store)
            real.append(time.perf_counter() - started)
            assert len(report.blobs) == ORPHANS and report.kept_blobs == total - ORPHANS
            add_orphans(store, r + 1)
        b, d, g = (statistics.median(x) for x in (base, dry, real))
        print(f"baseline scandir+stat: {b * 1e3:8.1f} ms/run  {b / total * 1e6:7.2f} us/blob")
        print(f"gc dry run (mark):     {d * 1e3:8.1f} ms/run  {d / total * 1e6:7.2f} us/blob"
              f"  x{d / b:.1f} baseline")  # fmt: skip
        print(f"gc (removes {ORPHANS}):   {g * 1e3:8.1f} ms/run  {g / total * 1e6:7.2f} us/blob"
              f"  x{g / b:.1f} baseline")  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
