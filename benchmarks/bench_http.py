"""One 512 MiB blob over HTTP from a local server into the store, against a plain
download + write + fsync of the same bytes, in the same run.

    .venv/bin/python benchmarks/bench_http.py [--mib 512] [--rounds 3]

Both sides use the same httpx client (:func:`ingestq.fetch.httpio.new_client`) and read
the same server (a threaded
HTTP server on 127.0.0.1 serving from memory). The store side runs the ingest core
(:func:`ingestq.ingest.attempt.ingest_once`) with fsync on: Range/resume bookkeeping, sha256 of
every byte, size and digest checks, the atomic content-addressed commit. Prints both
throughputs and the ratio (target >= 0.8). Best of ``--rounds`` each.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingestq.fetch.http import HttpSource
from ingestq.fetch.httpio import new_client
from ingestq.ingest.attempt import ingest_once
from ingestq.ingest.request import make_request
from ingestq.store.local import LocalStore
from tests.tasks.blobserver import Behaviour, BlobServer

#: Bytes per read of the plain download.
CHUNK = 1 << 20


def plain_download(url: str, path: Path) -> int:
    """GET ``url`` into ``path`` and fsync it: the baseline."""
    client = new_client()
    n = 0
    try:
        with client.stream("GET", url) as response, open(path, "wb") as f:
            for chunk in response.iter_raw(CHUNK):
                f.write(chunk)
                n += len(chunk)
            f.flush()
            os.fsync(f.fileno())
    finally:
        client.close()
    return n


def ingest(url: str, root: Path, digest: str, size: int) -> int:
    """The ingest core into a fresh store with fsync on."""
    store = LocalStore(root, fsync=True)
    client = new_client()
    try:
        request = make_request({"type": "http", "url": url}, url, digest=digest, size=size)
        result = ingest_once(store, HttpSource(url, client), request)
    finally:
        client.close()
    assert str(result.info.digest) == digest and result.fetched
    return result.info.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.mib << 20
    data = os.urandom(size)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    server = BlobServer()
    url = server.add("/blob", Behaviour(data=data, chunk=1 << 20))
    server.start()
    plain: list[float] = []
    ours: list[float] = []
    try:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
            for i in range(args.rounds):
                target = Path(tmp) / f"plain-{i}"
                t0 = time.perf_counter()
                assert plain_download(url, target) == size
                plain.append(time.perf_counter() - t0)
                target.unlink()
                t0 = time.perf_counter()
                assert ingest(url, Path(tmp) / f"store-{i}", digest, size) == size
                ours.append(time.perf_counter() - t0)
    finally:
        server.stop()
    mib = size / (1 << 20)
    p, o = mib / min(plain), mib / min(ours)
    print(f"plain download + write + fsync: {p:8.1f} MiB/s  (best of {args.rounds})")
    print(f"ingestq ingest into the store : {o:8.1f} MiB/s  (best of {args.rounds})")
    print(f"ratio ingest/plain            : {o / p:8.2f}  (target >= 0.8)")


if __name__ == "__main__":
    main()
