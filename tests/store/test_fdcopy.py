"""LocalWriter.copy_from: a file descriptor copied into the data file, by the kernel
where the filesystem shares extents (a loop-mounted XFS) and through a ring of buffers
elsewhere (ext4, tmpfs), with the digest always covering the bytes the data file holds."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ingestq import errdefs
from ingestq.store.budget import Budget
from ingestq.store.digest import Digest
from ingestq.store.fdcopy import (
    FdCopier,
    Method,
    copy_fd,
    copy_saves_work,
    filesystem_type,
    kernel_copy,
)
from ingestq.store.local import LocalStore
from ingestq.store.local import writer as writer_module
from ingestq.store.local.hashqueue import HashQueue
from ingestq.store.local.writer import COPY_PIECE, READ_PIECE, READ_RING, LocalWriter
from ingestq.store.values import Info
from tests.store.mounts import loop_xfs
from tests.store.test_disk_errors import small_tmpfs

MiB = 1 << 20
SIZE = 2 * COPY_PIECE + 12345  # several pieces and an odd tail


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A directory on a tmpfs (/dev/shm): another filesystem than the test's tmp_path."""
    path = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="ingestq-fdcopy-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[Path]:
    """A freshly made XFS with reflinks, loop-mounted: a filesystem that shares extents."""
    with loop_xfs(tmp_path) as mnt:
        yield mnt


def _file(path: Path, size: int = SIZE) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def _writer(store: LocalStore, ref: str = "r") -> LocalWriter:
    w = store.writer(ref)
    assert isinstance(w, LocalWriter) and isinstance(w, FdCopier)
    return w


def _copy_all(w: LocalWriter, src: Path, offset: int = 0, **kw: Method) -> int:
    fd = os.open(src, os.O_RDONLY)
    try:
        total = 0
        while n := w.copy_from(fd, offset + total, 3 * MiB, **kw):
            total += n
        return total
    finally:
        os.close(fd)


@pytest.mark.parametrize("method", ["auto", "copy_file_range", "sendfile", "none"])
def test_copy_from_commits_the_file_with_its_digest_and_size_by_every_method(
    tmp_path: Path, method: Method
) -> None:
    data = _file(tmp_path / "src")
    store = LocalStore(tmp_path / "store", fsync=True)
    w = _writer(store)
    assert _copy_all(w, tmp_path / "src", method=method) == SIZE
    digest = Digest.from_bytes(data)
    assert w.digest() == digest
    info = w.commit(SIZE, digest)
    assert info.size == SIZE
    assert store.reader_at(digest).read_at(0, SIZE) == data


@pytest.mark.parametrize("where", ["source-on-tmpfs", "store-on-tmpfs"])
def test_copy_from_across_filesystems_works_or_falls_back(
    tmp_path: Path, tmpfs: Path, where: str
) -> None:
    src_dir, store_dir = (tmpfs, tmp_path) if where == "source-on-tmpfs" else (tmp_path, tmpfs)
    data = _file(src_dir / "src")
    store = LocalStore(store_dir / "store", fsync=True)
    w = _writer(store)
    assert _copy_all(w, src_dir / "src") == SIZE
    digest = Digest.from_bytes(data)
    assert w.commit(SIZE, digest).digest == digest
    assert store.reader_at(digest).read_at(0, SIZE) == data


def test_copy_from_returns_fewer_bytes_at_the_end_of_the_file_and_zero_after(
    tmp_path: Path,
) -> None:
    data = _file(tmp_path / "src", 5 * MiB)
    w = _writer(LocalStore(tmp_path / "store", fsync=False))
    fd = os.open(tmp_path / "src", os.O_RDONLY)
    try:
        assert w.copy_from(fd, 4 * MiB, 8 * MiB) == MiB
        assert w.copy_from(fd, 5 * MiB, 8 * MiB) == 0
        assert w.copy_from(fd, 0, 0) == 0
    finally:
        os.close(fd)
    assert w.status().offset == MiB
    assert w.digest() == Digest.from_bytes(data[4 * MiB :])
    w.close()


def test_copy_from_and_write_mix_in_order(tmp_path: Path) -> None:
    data = _file(tmp_path / "src", 6 * MiB)
    store = LocalStore(tmp_path / "store", fsync=False)
    w = _writer(store)
    fd = os.open(tmp_path / "src", os.O_RDONLY)
    try:
        w.write(data[:MiB])
        assert w.copy_from(fd, MiB, 2 * MiB) == 2 * MiB
        w.write(data[3 * MiB : 4 * MiB])
        assert w.copy_from(fd, 4 * MiB, 2 * MiB, method="none") == 2 * MiB
    finally:
        os.close(fd)
    digest = Digest.from_bytes(data)
    assert w.commit(len(data), digest).digest == digest
    assert store.reader_at(digest).read_at(0, len(data)) == data


def test_a_resumed_writer_copies_from_the_stored_offset_over_the_adopted_prefix(
    tmp_path: Path,
) -> None:
    data = _file(tmp_path / "src")
    store = LocalStore(tmp_path / "store", fsync=True)
    digest = Digest.from_bytes(data)
    with store.writer("r") as w:
        w.write(data[: 3 * MiB])
    w2 = _writer(store)
    offset = w2.status().offset
    assert offset == 3 * MiB
    assert _copy_all(w2, tmp_path / "src", offset) == SIZE - offset
    assert w2.commit(SIZE, digest).digest == digest


def test_the_digest_covers_the_bytes_in_the_data_file_not_a_later_source(
    tmp_path: Path,
) -> None:
    data = _file(tmp_path / "src", 4 * MiB)
    w = _writer(LocalStore(tmp_path / "store", fsync=False))
    fd = os.open(tmp_path / "src", os.O_RDWR)
    try:
        assert w.copy_from(fd, 0, 2 * MiB) == 2 * MiB
        os.pwrite(fd, b"\0" * MiB, 0)  # changes bytes already copied: no effect
        assert w.copy_from(fd, 2 * MiB, 2 * MiB) == 2 * MiB
    finally:
        os.close(fd)
    stored = w.data_path.read_bytes()
    assert stored == data
    assert w.digest() == Digest("sha256", hashlib.sha256(stored).hexdigest())
    w.close()


def test_kernel_copy_none_copies_nothing_and_says_so(tmp_path: Path) -> None:
    _file(tmp_path / "src", 1000)
    src = os.open(tmp_path / "src", os.O_RDONLY)
    dst = os.open(tmp_path / "dst", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert kernel_copy(src, dst, 0, 1000, "none") is None
        assert kernel_copy(src, dst, 0, 1000, "auto") == 1000
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "dst").read_bytes() == (tmp_path / "src").read_bytes()


def test_copy_from_stops_at_the_budget_and_keeps_the_prefix(tmp_path: Path) -> None:
    data = _file(tmp_path / "src", 3 * MiB)
    store = LocalStore(tmp_path / "store", fsync=False, budget=Budget(max_bytes=MiB))
    w = _writer(store)
    fd = os.open(tmp_path / "src", os.O_RDONLY)
    try:
        with pytest.raises(errdefs.ResourceExhausted):
            w.copy_from(fd, 0, 3 * MiB)
    finally:
        os.close(fd)
    kept = w.status().offset
    assert 0 < kept <= MiB
    assert w.digest() == Digest.from_bytes(data[:kept])
    w.close()


def _copy_fd(
    store: LocalStore, src: Path, size: int, expected: Digest | None = None
) -> Info | None:
    fd = os.open(src, os.O_RDONLY)
    try:
        with store.writer("r") as w:
            assert isinstance(w, LocalWriter)
            return copy_fd(w, fd, size, expected)
    finally:
        os.close(fd)


def test_copy_fd_resumes_checks_sizes_and_commits_like_copy(tmp_path: Path) -> None:
    data = _file(tmp_path / "src")
    store = LocalStore(tmp_path / "store", fsync=True)
    digest = Digest.from_bytes(data)
    with store.writer("r") as w:
        w.write(data[:MiB])
    info = _copy_fd(store, tmp_path / "src", SIZE, digest)
    assert info is not None and info.digest == digest and info.size == SIZE
    assert _copy_fd(store, tmp_path / "src", SIZE, digest) is None  # already exists


def test_copy_fd_of_a_shorter_file_is_data_loss_and_a_longer_one_failed_precondition(
    tmp_path: Path,
) -> None:
    _file(tmp_path / "src", 2 * MiB)
    store = LocalStore(tmp_path / "store", fsync=False)
    with pytest.raises(errdefs.DataLoss):
        _copy_fd(store, tmp_path / "src", 3 * MiB)
    assert store.status("r").offset == 2 * MiB  # kept for a resume
    store.abort("r")
    with pytest.raises(errdefs.FailedPrecondition, match="longer"):
        _copy_fd(store, tmp_path / "src", MiB)
    assert store.status("r").offset == MiB  # nothing past the size was written


def _type_of(path: Path) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return filesystem_type(fd)
    finally:
        os.close(fd)


def _shared_extents(path: Path) -> bool:
    """Whether the kernel reports extents of ``path`` shared with another file."""
    out = subprocess.run(["filefrag", "-v", str(path)], check=True, capture_output=True)
    return b"shared" in out.stdout


@pytest.fixture
def kernel_copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the writer's kernel copy calls that copied something."""
    calls: list[int] = []
    real = kernel_copy

    def counting(
        src: int, dst: int, offset: int, count: int, method: Method = "auto"
    ) -> int | None:
        n = real(src, dst, offset, count, method)
        if n:
            calls.append(n)
        return n

    monkeypatch.setattr(writer_module, "kernel_copy", counting)
    return calls


def test_the_filesystem_type_is_the_one_stat_reports(tmp_path: Path, tmpfs: Path) -> None:
    for path in (tmp_path, tmpfs):
        out = subprocess.run(["stat", "-f", "-c", "%t", str(path)], check=True,
                             capture_output=True, text=True)  # fmt: skip
        assert _type_of(path) == int(out.stdout, 16)
    assert _type_of(tmpfs) == 0x01021994  # TMPFS_MAGIC


def test_on_a_filesystem_that_shares_extents_the_blob_shares_the_source_file(
    xfs: Path, kernel_copies: list[int]
) -> None:
    assert _type_of(xfs) == 0x58465342  # XFS_SUPER_MAGIC
    data = _file(xfs / "src")
    store = LocalStore(xfs / "store", fsync=True)
    info = _copy_fd(store, xfs / "src", SIZE)
    assert info is not None and info.digest == Digest.from_bytes(data)
    assert sum(kernel_copies) == SIZE
    assert store.reader_at(info.digest).read_at(0, SIZE) == data
    blob = xfs / "store" / "blobs" / "sha256" / info.digest.encoded
    assert _shared_extents(blob)


@pytest.mark.parametrize("where", ["source-elsewhere-store-on-xfs", "both-on-tmpfs"])
def test_where_a_kernel_copy_saves_nothing_it_reads_through_buffers(
    request: pytest.FixtureRequest, tmp_path: Path, kernel_copies: list[int], where: str
) -> None:
    """Across filesystems (even into one that shares extents) and on a tmpfs."""
    if where == "both-on-tmpfs":
        src_dir = store_dir = request.getfixturevalue("tmpfs")
    else:
        src_dir, store_dir = tmp_path, request.getfixturevalue("xfs")
    data = _file(src_dir / "src")
    store = LocalStore(store_dir / "store", fsync=True)
    info = _copy_fd(store, src_dir / "src", SIZE)
    assert info is not None and info.digest == Digest.from_bytes(data)
    assert kernel_copies == []
    src = os.open(src_dir / "src", os.O_RDONLY)
    dst = os.open(store_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert not copy_saves_work(src, dst)
    finally:
        os.close(src)
        os.close(dst)


def test_a_ring_buffer_is_refilled_only_after_its_piece_is_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first piece's hashing is held until the copy waits for a free buffer; had it
    refilled that buffer instead, the held piece would be hashed with later bytes."""
    size = (READ_RING + 3) * READ_PIECE + 777
    data = _file(tmp_path / "src", size)
    waiting = threading.Event()
    wait_below = HashQueue.wait_below

    def noting_the_wait(queue: HashQueue, count: int) -> None:
        if len(queue._pieces) >= count:
            waiting.set()
        wait_below(queue, count)

    monkeypatch.setattr(HashQueue, "wait_below", noting_the_wait)
    w = _writer(LocalStore(tmp_path / "store", fsync=False))
    assert writer_module._open_writers == 1  # else it hashes inline and nothing is held
    real = w._hasher
    held_first: list[bool] = []

    class Holding:
        def update(self, piece: memoryview) -> None:
            if not held_first:
                held_first.append(waiting.wait(timeout=30))
            real.update(piece)

        def hexdigest(self) -> str:
            return real.hexdigest()

        def copy(self) -> object:
            return real.copy()

    w._hasher = Holding()  # type: ignore[assignment]
    assert _copy_all(w, tmp_path / "src", method="none") == size
    assert held_first == [True]  # the copy did come to wait for the held piece
    assert w.digest() == Digest.from_bytes(data)
    w.close()


def test_a_full_disk_while_reading_through_buffers_keeps_an_exact_prefix(
    tmp_path: Path,
) -> None:
    data = _file(tmp_path / "src", 6 * MiB)
    with small_tmpfs(tmp_path / "mnt", "size=3m") as mnt:
        assert mnt is not None, "mounting a tmpfs needs root"
        store = LocalStore(mnt / "store", fsync=True)
        w = _writer(store)
        with pytest.raises(errdefs.ResourceExhausted, match="No space left"):
            _copy_all(w, tmp_path / "src", method="none")
        kept = w.status().offset
        assert 0 < kept < len(data)
        assert w.digest() == Digest.from_bytes(data[:kept])
        w.close()
        assert store.status("r").offset == kept
        store.abort("r")
        small = _file(tmp_path / "small", 2 * MiB)
        info = _copy_fd(store, tmp_path / "small", 2 * MiB)  # room again: it completes
        assert info is not None and info.digest == Digest.from_bytes(small)


def _interrupted_then_finished(w: LocalWriter, src: Path, data: bytes, method: Method) -> None:
    """After the interrupt the writer's offset and digest cover exactly its data file;
    copying on from that offset commits the whole file under its digest."""
    offset = w.status().offset
    held = w.data_path.read_bytes()
    assert len(held) == offset and held == data[:offset]
    assert w.digest() == Digest.from_bytes(held)
    assert _copy_all(w, src, offset, method=method) == len(data) - offset
    digest = Digest.from_bytes(data)
    assert w.commit(len(data), digest).digest == digest


def _interrupting(call: Callable[..., Any], nth: int, counted: list[int],
                  only: Callable[..., bool] = lambda *a: True) -> Callable[..., Any]:  # fmt: skip
    """``call``, but the ``nth`` call that ``only`` picks raises KeyboardInterrupt after
    it returned: its bytes are in the file, its count never comes back."""

    def wrapped(*args: Any) -> Any:
        n = call(*args)
        if only(*args):
            counted.append(n)
            if len(counted) == nth:
                raise KeyboardInterrupt
        return n

    return wrapped


def test_an_interrupt_after_a_kernel_copy_returned_leaves_no_uncounted_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _file(tmp_path / "src")
    w = _writer(LocalStore(tmp_path / "store", fsync=False))
    monkeypatch.setattr(writer_module, "kernel_copy", _interrupting(kernel_copy, 2, []))
    with pytest.raises(KeyboardInterrupt):
        _copy_all(w, tmp_path / "src", method="copy_file_range")
    monkeypatch.setattr(writer_module, "kernel_copy", kernel_copy)
    _interrupted_then_finished(w, tmp_path / "src", data, "copy_file_range")


def test_an_interrupt_after_a_ring_write_returned_counts_what_reached_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _file(tmp_path / "src")
    w = _writer(LocalStore(tmp_path / "store", fsync=False))
    data_fd = w._open_fd()
    writes: list[int] = []
    real = os.write
    monkeypatch.setattr(os, "write", _interrupting(real, 5, writes, lambda fd, _: fd == data_fd))
    with pytest.raises(KeyboardInterrupt):
        _copy_all(w, tmp_path / "src", method="none")
    monkeypatch.setattr(os, "write", real)
    assert w.status().offset == sum(writes)
    _interrupted_then_finished(w, tmp_path / "src", data, "none")
