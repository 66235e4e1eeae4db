"""Direct writes (:mod:`ingestq.store.local.direct`): a durable store's large pieces skip
the page cache, every piece lands in order whatever its size and offset, and a file that
takes no direct writes is written through the page cache instead. Residency in the page
cache is read with util-linux's ``fincore``."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from pathlib import Path

import pytest

from ingestq.store import Digest, LocalStore, read_blob
from ingestq.store.local import direct as direct_module
from ingestq.store.local.direct import ALIGN, open_direct
from ingestq.store.local.writer import DIRECT_MIN
from tests.servers.util import require_binary

MiB = 1 << 20


def resident(path: Path) -> int:
    """Bytes of ``path`` in the page cache, as ``fincore`` reports them."""
    out = subprocess.run(
        [require_binary("fincore"), "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(out.split()[0])


def pieces(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos = [], 0
    for n in sizes:
        out.append(data[pos : pos + n])
        pos += n
    out.append(data[pos:])
    return [p for p in out if p]


def write_and_commit(store: LocalStore, ref: str, parts: list[bytes]) -> Path:
    """Commit ``parts`` as one blob (its digest and size checked); the blob's path."""
    data = b"".join(parts)
    with store.writer(ref, total=len(data)) as w:
        for part in parts:
            assert w.write(part) == len(part)
        info = w.commit(len(data), Digest("sha256", hashlib.sha256(data).hexdigest()))
    return store.blob_path(info.digest)


def test_large_pieces_of_a_durable_write_skip_the_page_cache(tmp_path: Path) -> None:
    data = os.urandom(8 * MiB + 1234)
    parts = pieces(data, [MiB + 3, 700 * 1024, 2 * MiB - 5, MiB])
    durable = write_and_commit(LocalStore(tmp_path / "durable", fsync=True), "r", parts)
    buffered = write_and_commit(LocalStore(tmp_path / "buffered", fsync=False), "r", parts)
    # Only the unaligned head and tail of each piece went through the page cache.
    assert resident(durable) <= 2 * len(parts) * ALIGN
    assert resident(buffered) >= len(data)  # whole pages
    assert durable.read_bytes() == buffered.read_bytes() == data


def test_pieces_of_any_size_at_any_offset_land_in_order(tmp_path: Path) -> None:
    rng = random.Random(7)
    store = LocalStore(tmp_path / "s", fsync=True)
    for round_ in range(4):
        sizes = [rng.choice([1, 17, ALIGN - 1, ALIGN, ALIGN + 1, DIRECT_MIN - 1, DIRECT_MIN,
                             DIRECT_MIN + 513, 3 * MiB + 77]) for _ in range(12)]  # fmt: skip
        data = rng.randbytes(sum(sizes))
        assert write_and_commit(store, f"r{round_}", pieces(data, sizes)).read_bytes() == data


def test_a_resumed_ingest_at_an_unaligned_offset(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s", fsync=True)
    data = os.urandom(3 * MiB + 999)
    with store.writer("r", total=len(data)) as w:
        w.write(data[:5000])
        w.write(data[5000 : MiB + 5000])
    with store.writer("r", total=len(data)) as w:
        assert w.status().offset == MiB + 5000
        w.write(data[MiB + 5000 :])
        info = w.commit(len(data), Digest("sha256", hashlib.sha256(data).hexdigest()))
    assert read_blob(store, info.digest) == data


def test_truncate_then_write_again(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s", fsync=True)
    data = os.urandom(2 * MiB + 5)
    with store.writer("r") as w:
        w.write(os.urandom(MiB + 1))
        w.truncate(0)
        w.write(data)
        info = w.commit(len(data))
    assert read_blob(store, info.digest) == data


def test_a_refused_direct_write_falls_back_to_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Direct writes aligned to 256 bytes only: the kernel refuses one at offset 256 of a
    # disk whose blocks are larger (EINVAL); the appender then writes the rest buffered.
    block = int(Path("/sys/dev/block").joinpath(_device_of(tmp_path), "queue",
                                                  "logical_block_size").read_text())  # fmt: skip
    assert block > 256
    monkeypatch.setattr(direct_module, "ALIGN", 256)
    path = tmp_path / "f"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDWR)
    try:
        appender = open_direct(fd)
        assert appender is not None and appender.active
        data = os.urandom(MiB)
        assert appender.write_some(fd, memoryview(data)[:256], 0) == 256  # buffered
        pos = 256
        while pos < len(data):
            pos += appender.write_some(fd, memoryview(data)[pos:], pos)
        assert not appender.active
        appender.close()
    finally:
        os.close(fd)
    assert path.read_bytes() == data


def test_no_direct_writes_where_the_system_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "O_DIRECT")  # as on a system without it (macOS)
    data = os.urandom(4 * MiB)
    blob = write_and_commit(LocalStore(tmp_path / "s", fsync=True), "r", [data])
    assert resident(blob) >= len(data)
    assert blob.read_bytes() == data


def test_the_open_file_is_reopened_not_its_path(tmp_path: Path) -> None:
    # The path now names another file: the appender still writes the one that is open.
    path = tmp_path / "f"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDWR)
    try:
        path.rename(tmp_path / "moved")
        (tmp_path / "decoy").write_bytes(b"")
        path.symlink_to(tmp_path / "decoy")
        appender = open_direct(fd)
        assert appender is not None
        data = os.urandom(2 * ALIGN)
        assert appender.write_some(fd, memoryview(data), 0) == len(data)
        appender.close()
    finally:
        os.close(fd)
    assert (tmp_path / "moved").read_bytes() == data
    assert (tmp_path / "decoy").read_bytes() == b""


def _device_of(path: Path) -> str:
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
