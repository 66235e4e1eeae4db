"""Ingest of a local file against copying it with ``dd`` / ``write`` + ``fsync``.

Every variant copies the same file (kept in the page cache, as for ``dd``) onto the
same filesystem and ends durable. As whole processes:

* dd:              ``dd if=FILE of=OUT bs=1M conv=fsync``;
* content ingest:  ``ingestq content ingest FILE --ref ...`` (store API from the CLI);
* ingest:          ``ingestq ingest FILE`` (the ingest core, embedded: no Redis).

In one process:

* raw:             read 1 MiB pieces of FILE, ``write`` them, ``fsync`` (no hashing);
* store:           ``LocalStore.writer`` + :func:`ingestq.store.fdcopy.copy_fd` (the
                   writer's ``copy_from``) + commit;
* ingest_once:     :func:`ingestq.ingest.attempt.ingest_once` of a ``FileSource``;
* sha256:          ``hashlib.file_digest`` of FILE (from the page cache), nothing written:
                   the floor of anything that verifies the bytes, since one SHA-256 runs
                   on one core. ``dd / sha256`` is printed as the bound of the process
                   ratios: what an ingest costing nothing but its hash would reach.

The store sides copy as ``copy_from`` chooses for the two files: in the kernel
(``copy_file_range``, hashing the data file back from the page cache) where the
filesystem shares extents or copies on its server, else through a ring of buffers
hashed behind the writes (ext4, tmpfs); they must hash, the baselines do not. Runs
alternate (the order rotates every round) after a ``sync`` so that none inherits
another's writeback; each store gets a fresh root, deleted outside the timed part.
The medians are compared (ratio = baseline time / ingestq time).

    .venv/bin/python benchmarks/bench_localfile.py --size 512M --repeat 5
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingestq.fetch.files import FileSource
from ingestq.ingest.attempt import ingest_once
from ingestq.ingest.request import make_request
from ingestq.store import LocalStore
from ingestq.store.fdcopy import FdCopier, copy_fd

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
CLI = str(Path(sys.executable).with_name("ingestq"))


def parse_size(text: str) -> int:
    """``1G``, ``512M``, ``4096`` (binary units)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in UNITS else ""
    return int(float(t[: len(t) - len(unit)]) * UNITS[unit])


def timed(fn: Callable[[], object]) -> float:
    os.sync()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(*argv: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def raw_copy(src: Path, dst: Path) -> None:
    fin = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while n := os.readv(fin, [buf]):
            pos = 0
            while pos < n:
                pos += os.write(fout, view[pos:n])
        os.fsync(fout)
    finally:
        os.close(fin)
        os.close(fout)


def sha256_only(src: Path) -> None:
    with src.open("rb") as f:
        hashlib.file_digest(f, "sha256")


def store_copy(src: Path, root: Path) -> None:
    store = LocalStore(root, fsync=True)
    fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with store.writer("bench") as w:
            assert isinstance(w, FdCopier)
            copy_fd(w, fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def ingest_copy(src: Path, root: Path) -> None:
    store = LocalStore(root, fsync=True)
    request = make_request({"type": "file", "path": str(src)}, str(src))
    ingest_once(store, FileSource(src, None), request)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="512M", help="file size (default 512M)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each (default 5)")
    parser.add_argument("--dir", default=None, help="where to work (default: a temp dir)")
    args = parser.parse_args()
    size = parse_size(args.size)
    base = Path(tempfile.mkdtemp(prefix="bench-localfile-", dir=args.dir))
    src, out = base / "src.bin", base / "out.bin"
    try:
        with src.open("wb") as f:
            left = size
            while left:
                n = min(left, 16 << 20)
                f.write(os.urandom(n))
                left -= n
        mib = size / (1 << 20)
        env = {**os.environ, "INGESTQ_FILE_ROOTS": str(base)}
        env.pop("INGESTQ_REDIS_URL", None)
        env.pop("INGESTQ_BROKER_URL", None)
        # An installed package has its bytecode cached: let the CLI write it (warm-up).
        env.pop("PYTHONDONTWRITEBYTECODE", None)

        def fresh(name: str) -> Path:
            return base / name

        def clean() -> None:  # outside the timed part: no run pays for another's delete
            out.unlink(missing_ok=True)
            for name in ("cli-content", "cli-ingest", "store", "ingest"):
                shutil.rmtree(base / name, ignore_errors=True)

        variants: dict[str, Callable[[int], None]] = {
            "dd": lambda i: run("dd", f"if={src}", f"of={out}", "bs=1M", "conv=fsync"),
            "cli content ingest": lambda i: run(
                *(CLI, "content", "ingest", str(src), "--ref", "bench"),
                *("--root", str(fresh("cli-content"))),
                env=env,
            ),
            "cli ingest": lambda i: run(
                CLI, "ingest", str(src), "--root", str(fresh("cli-ingest")), env=env
            ),
            "raw": lambda i: raw_copy(src, out),
            "store": lambda i: store_copy(src, fresh("store")),
            "ingest_once": lambda i: ingest_copy(src, fresh("ingest")),
            "sha256": lambda i: sha256_only(src),
        }
        for fn in variants.values():  # warm-up: bytecode caches, page cache of FILE
            clean()
            fn(-1)
        times: dict[str, list[float]] = {k: [] for k in variants}
        print(f"{mib:.0f} MiB file under {base} ({args.repeat} interleaved runs each)")
        for i in range(args.repeat):
            names = list(variants)
            names = names[i % len(names) :] + names[: i % len(names)]  # rotate the order
            for name in names:
                clean()
                fn = variants[name]
                times[name].append(timed(lambda fn=fn, i=i: fn(i)))  # type: ignore[misc]
            print(f"  run {i + 1}: " + "  ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()))
        med = {k: statistics.median(v) for k, v in times.items()}
        for name, t in med.items():
            print(f"{name:20s} median {t:.3f} s  {mib / t:8.1f} MiB/s")
        for name, base_name, goal in (
            ("cli content ingest", "dd", 0.9),
            ("cli ingest", "dd", 0.9),
            ("store", "raw", 0.95),
            ("ingest_once", "raw", 0.95),
        ):
            ratio = med[base_name] / med[name]
            print(f"ratio {name}/{base_name}: {ratio:.3f} (goal >= {goal})")
        print(
            f"(context) bound: dd / sha256 = {med['dd'] / med['sha256']:.3f}: the process "
            "ratio of an ingest that cost nothing but hashing the file on one core"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
