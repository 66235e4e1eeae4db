"""A durable ingest's bytes leave the page cache once on disk (``keep_cache`` and
``INGESTQ_KEEP_CACHE`` keep them), read with util-linux's ``fincore``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ingestq.store.digest import Digest
from ingestq.store.local import LocalStore
from ingestq.store.local.writer import LocalWriter

MiB = 1 << 20
SIZE = 48 * MiB


def resident(path: Path) -> int:
    """Bytes of ``path`` in the page cache, as ``fincore`` reports them."""
    out = subprocess.run(["fincore", "-b", "-n", "-r", "-o", "RES", str(path)],
                         check=True, capture_output=True, text=True)  # fmt: skip
    return int(out.stdout.split()[0])


def _content(size: int = SIZE) -> bytes:
    return os.urandom(size)


def _write(store: LocalStore, data: bytes) -> tuple[LocalWriter, Path]:
    w = store.writer("r")
    assert isinstance(w, LocalWriter)
    for i in range(0, len(data), MiB):
        w.write(data[i : i + MiB])
    return w, w.data_path


def test_a_durable_ingest_drops_what_is_on_disk_as_it_goes_and_all_at_commit(
    tmp_path: Path,
) -> None:
    data = _content()
    store = LocalStore(tmp_path / "store", fsync=True, keep_cache=False)
    w, path = _write(store, data)
    # What was written back has left the cache already: the last steps and pages still
    # under writeback stay.
    assert resident(path) < SIZE // 2
    digest = Digest.from_bytes(data)
    info = w.commit(SIZE, digest)
    blob = tmp_path / "store" / "blobs" / "sha256" / info.digest.encoded
    assert resident(blob) == 0
    assert store.reader_at(digest).read_at(0, SIZE) == data  # read back from the disk


def test_a_durable_close_drops_the_kept_ingest_too(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store", fsync=True, keep_cache=False)
    w, path = _write(store, _content())
    w.close()
    sealed = path.with_name(path.name.replace("data.", "sealed."))
    assert sealed.stat().st_size == SIZE
    assert resident(sealed) == 0
    assert store.status("r").offset == SIZE  # kept for a resume, only out of the cache


def test_keep_cache_and_no_fsync_leave_the_bytes_in_the_cache(tmp_path: Path) -> None:
    data = _content()
    digest = Digest.from_bytes(data)
    for name, store in (
        ("kept", LocalStore(tmp_path / "kept", fsync=True, keep_cache=True)),
        ("nosync", LocalStore(tmp_path / "nosync", fsync=False)),
    ):
        w, _ = _write(store, data)
        w.commit(SIZE, digest)
        blob = tmp_path / name / "blobs" / "sha256" / digest.encoded
        assert resident(blob) == SIZE, name


def test_the_environment_asks_to_keep_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not LocalStore(tmp_path / "a").keep_cache
    monkeypatch.setenv("INGESTQ_KEEP_CACHE", "1")
    assert LocalStore(tmp_path / "b").keep_cache
    assert not LocalStore(tmp_path / "c", keep_cache=False).keep_cache


@pytest.mark.parametrize("method", ["copy_file_range", "none"])
def test_a_copied_file_is_hashed_whole_while_its_cache_is_dropped(
    tmp_path: Path, method: str
) -> None:
    """A kernel copy hashes each piece read back from the data file: dropping the
    cache behind it must never drop a piece before it is hashed (it would still be
    right, read from disk, but the check is that nothing is skipped or doubled)."""
    data = _content()
    (tmp_path / "src").write_bytes(data)
    store = LocalStore(tmp_path / "store", fsync=True, keep_cache=False)
    w = store.writer("r")
    assert isinstance(w, LocalWriter)
    fd = os.open(tmp_path / "src", os.O_RDONLY)
    try:
        done = 0
        while n := w.copy_from(fd, done, 5 * MiB, method=method):  # type: ignore[arg-type]
            done += n
    finally:
        os.close(fd)
    assert resident(w.data_path) < SIZE // 2
    digest = Digest.from_bytes(data)
    assert w.commit(SIZE, digest).digest == digest
