"""A durable ingest's bytes leave the page cache once on disk (``keep_cache`` and
``INGESTQ_KEEP_CACHE`` keep them), read with util-linux's ``fincore`` on a disk-backed
filesystem (a tmpfs keeps every page whatever it is told)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestq.store.digest import Digest
from ingestq.store.fdcopy import filesystem_type
from ingestq.store.local import LocalStore
from ingestq.store.local.writer import WRITEBACK_STEP, LocalWriter
from tests.store.mounts import loop_xfs

MiB = 1 << 20
SIZE = 48 * MiB
TMPFS_MAGIC = 0x01021994


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path`` where it is on a disk, else a loop-mounted XFS inside it."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        on_tmpfs = filesystem_type(fd) == TMPFS_MAGIC
    finally:
        os.close(fd)
    if not on_tmpfs:
        yield tmp_path
        return
    with loop_xfs(tmp_path, 512 << 20) as mnt:
        yield mnt


def resident(path: Path) -> int:
    """Bytes of ``path`` in the page cache, as ``fincore`` reports them."""
    out = subprocess.run(["fincore", "-b", "-n", "-r", "-o", "RES", str(path)],
                         check=True, capture_output=True, text=True)  # fmt: skip
    return int(out.stdout.split()[0])


def _write(w: LocalWriter, data: bytes) -> None:
    for i in range(0, len(data), MiB):
        w.write(data[i : i + MiB])


def _writer(store: LocalStore) -> LocalWriter:
    w = store.writer("r")
    assert isinstance(w, LocalWriter)
    return w


def _blob(store: LocalStore, digest: Digest) -> Path:
    return store.root / "blobs" / digest.algorithm / digest.encoded


def test_a_durable_ingest_drops_what_is_on_disk_as_it_goes_and_all_at_commit(
    disk: Path,
) -> None:
    data = os.urandom(SIZE)
    store = LocalStore(disk / "store", fsync=True, keep_cache=False)
    w = _writer(store)
    _write(w, data)
    assert resident(w.data_path) < SIZE // 2  # what was written back has gone already
    digest = Digest.from_bytes(data)
    w.commit(SIZE, digest)
    assert resident(_blob(store, digest)) == 0
    assert store.reader_at(digest).read_at(0, SIZE) == data  # read back from the disk


def test_a_durable_close_drops_the_kept_ingest_too(disk: Path) -> None:
    store = LocalStore(disk / "store", fsync=True, keep_cache=False)
    w = _writer(store)
    _write(w, os.urandom(SIZE))
    path = w.data_path
    w.close()
    sealed = path.with_name(path.name.replace("data.", "sealed."))
    assert resident(sealed) == 0
    assert store.status("r").offset == SIZE  # kept for a resume, only out of the cache


def test_a_resumed_ingest_drops_its_prefix_too(disk: Path) -> None:
    data = os.urandom(2 * SIZE)
    store = LocalStore(disk / "store", fsync=True, keep_cache=False)
    w = _writer(store)
    _write(w, data[:SIZE])
    w.close()
    w = _writer(store)  # takes the sealed file over, hashing it (into the cache) again
    assert w.status().offset == SIZE
    _write(w, data[SIZE:])
    assert resident(w.data_path) < SIZE  # the prefix went with the steps after it
    digest = Digest.from_bytes(data)
    w.commit(2 * SIZE, digest)
    assert resident(_blob(store, digest)) == 0


def test_keep_cache_no_fsync_and_small_ingests_leave_the_bytes_in_the_cache(
    disk: Path,
) -> None:
    for name, size, store in (
        ("kept", SIZE, LocalStore(disk / "kept", fsync=True, keep_cache=True)),
        ("nosync", SIZE, LocalStore(disk / "nosync", fsync=False)),
        ("small", WRITEBACK_STEP - MiB, LocalStore(disk / "small", fsync=True)),
    ):
        data = os.urandom(size)
        digest = Digest.from_bytes(data)
        w = _writer(store)
        _write(w, data)
        w.commit(size, digest)
        assert resident(_blob(store, digest)) == size, name


def test_without_posix_fadvise_the_cache_is_kept_and_commit_works(
    disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "posix_fadvise")  # as on macOS
    data = os.urandom(SIZE)
    store = LocalStore(disk / "store", fsync=True, keep_cache=False)
    w = _writer(store)
    _write(w, data)
    digest = Digest.from_bytes(data)
    assert w.commit(SIZE, digest).digest == digest
    assert resident(_blob(store, digest)) == SIZE


def test_the_environment_asks_to_keep_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INGESTQ_KEEP_CACHE", raising=False)
    assert not LocalStore(tmp_path / "a").keep_cache
    monkeypatch.setenv("INGESTQ_KEEP_CACHE", "1")
    assert LocalStore(tmp_path / "b").keep_cache
    assert not LocalStore(tmp_path / "c", keep_cache=False).keep_cache


@pytest.mark.parametrize("method", ["copy_file_range", "none"])
def test_a_copy_never_drops_bytes_it_has_not_hashed(
    disk: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """A kernel copy hashes each piece read back from the data file: every range
    dropped while it copies ends at or before the bytes already hashed."""
    data = os.urandom(SIZE + 12345)
    (disk / "src").write_bytes(data)
    store = LocalStore(disk / "store", fsync=True, keep_cache=False)
    w = _writer(store)
    dropped: list[tuple[int, int, int]] = []
    fadvise = os.posix_fadvise

    def noting(fd: int, offset: int, length: int, advice: int) -> None:
        if length:  # 0 is the whole file, at the end
            dropped.append((offset, length, w._hashed))
        fadvise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", noting)
    fd = os.open(disk / "src", os.O_RDONLY)
    try:
        done = 0
        while n := w.copy_from(fd, done, 5 * MiB, method=method):  # type: ignore[arg-type]
            done += n
    finally:
        os.close(fd)
    assert dropped
    if method == "copy_file_range":  # the ring hashes from its buffers: _hashed unused
        assert all(offset + length <= hashed for offset, length, hashed in dropped)
    assert resident(w.data_path) < SIZE // 2
    digest = Digest.from_bytes(data)
    assert w.commit(len(data), digest).digest == digest
