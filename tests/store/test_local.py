"""LocalStore specifics the contract cannot see: the on-disk layout, how a data file
changes hands (claimed in place when sealed, copied otherwise), read-only blobs, lock
files, overlapped hashing, the hash pool across fork, timestamps and holders."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store import EMPTY, Descriptor, Digest, LocalStore, read_blob
from ingestq.store.local import LocalWriter
from ingestq.store.local import writer as writer_module
from ingestq.store.local.ingest import IngestDir
from ingestq.store.local.writer import PARALLEL_HASH_MIN
from ingestq.store.locks import ref_key


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store", fsync=False)


def ingest_dir(store: LocalStore, ref: str) -> IngestDir:
    return IngestDir(store.root / "ingest" / ref_key(ref))


def data_inode(store: LocalStore, ref: str) -> tuple[int, bool]:
    cur = ingest_dir(store, ref).current()
    assert cur is not None
    return cur.path.stat().st_ino, cur.sealed


def crash(w: LocalWriter) -> None:
    assert w._fd is not None
    os.close(w._fd)
    w._fd = None
    w.lease.release()


def test_layout(store: LocalStore) -> None:
    with store.writer("layer-1") as w:
        w.write(b"hello")
        d = ingest_dir(store, "layer-1")
        assert d.path.name == hashlib.sha256(b"layer-1").hexdigest()
        assert (d.path / "ref").read_text() == "layer-1"
        assert len(list(d.path.glob("data.*"))) == 1
        assert (store.root / "locks" / f"ref-{ref_key('layer-1')}.lock").exists()
        info = w.commit()
    blob = store.root / "blobs" / "sha256" / info.digest.encoded
    assert store.blob_path(info.digest) == blob
    assert store.blob_path(str(info.digest)) == blob
    assert blob.read_bytes() == b"hello"
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    assert blob.stat().st_nlink == 1  # no ingest name points at the published inode
    assert (store.root / "meta" / "sha256" / f"{info.digest.encoded}.json").exists()
    assert list((store.root / "ingest").iterdir()) == []
    assert list((store.root / "locks").iterdir()) == []
    assert store.exists(info.digest) and store.exists(str(info.digest))


def test_a_closed_writer_seals_its_file_and_the_next_takes_it_in_place(
    store: LocalStore,
) -> None:
    w = store.writer("seal")
    w.write(b"x" * 1000)
    live_ino, sealed = data_inode(store, "seal")
    assert not sealed
    w.close()
    ino, sealed = data_inode(store, "seal")
    assert (ino, sealed) == (live_ino, True)
    w = store.writer("seal")
    ino, sealed = data_inode(store, "seal")
    assert (ino, sealed) == (live_ino, False)  # same file, no copy
    assert w.status().offset == 1000
    w.close()


def test_a_crashed_writers_file_is_copied_not_taken(store: LocalStore) -> None:
    w = store.writer("crash")
    w.write(b"y" * 1000)
    old_ino, _ = data_inode(store, "crash")
    crash(w)
    w2 = store.writer("crash")
    new_ino, sealed = data_inode(store, "crash")
    assert new_ino != old_ino and not sealed
    assert [f.id for f in ingest_dir(store, "crash").data_files()] == [w2._id]
    assert w2.status().offset == 1000
    w2.close()


def test_a_failed_commit_seals_the_file(store: LocalStore) -> None:
    w = store.writer("failed")
    w.write(b"z" * 10)
    with pytest.raises(errdefs.FailedPrecondition):
        w.commit(11)
    assert data_inode(store, "failed")[1] is True


@pytest.mark.parametrize(
    "sizes",
    [
        [1],
        [PARALLEL_HASH_MIN - 1, 1],
        [PARALLEL_HASH_MIN],
        [PARALLEL_HASH_MIN + 1, 3, (1 << 20) + 7],
        [5 << 20],
    ],
)
@pytest.mark.parametrize("alone", [True, False], ids=["helper-thread", "inline"])
@pytest.mark.parametrize("kind", ["bytearray", "bytes", "view"])
def test_overlapped_hashing_matches_hashlib(
    store: LocalStore, sizes: list[int], alone: bool, kind: str
) -> None:
    chunks = [os.urandom(n) for n in sizes]
    pieces: list[bytes | bytearray | memoryview]
    if kind == "bytearray":  # mutable: hashed during the write
        pieces = [bytearray(c) for c in chunks]
    elif kind == "bytes":  # immutable: hashed behind the writes
        pieces = list(chunks)
    else:  # a view of bytes: the same
        pieces = [memoryview(b"x" + c)[1:] for c in chunks]
    other = None if alone else store.writer("other")  # another open writer: hash inline
    with store.writer("hash") as w:
        for i, piece in enumerate(pieces):
            assert w.write(piece) == len(chunks[i])
            assert w.digest() == Digest.from_bytes(b"".join(chunks[: i + 1]))
        info = w.commit()
    assert info.digest == Digest.from_bytes(b"".join(chunks))
    if other is not None:
        other.close()


def test_pieces_hashed_behind_the_writes_are_all_in_the_digest(store: LocalStore) -> None:
    chunks = [os.urandom(PARALLEL_HASH_MIN + n) for n in range(40)]
    with store.writer("behind") as w:
        for c in chunks:  # no digest() between: the hashing queue fills up
            w.write(c)
        assert w.status().offset == sum(map(len, chunks))
        info = w.commit(0, Digest.from_bytes(b"".join(chunks)))
    assert read_blob(store, info.digest) == b"".join(chunks)


def test_a_buffer_reused_after_write_does_not_change_the_digest(store: LocalStore) -> None:
    buf = bytearray(os.urandom(PARALLEL_HASH_MIN * 2))
    first = bytes(buf)
    with store.writer("reused") as w:
        w.write(buf)
        buf[:] = os.urandom(len(buf))  # the caller reuses its buffer at once
        w.write(buf)
        info = w.commit()
    assert info.digest == Digest.from_bytes(first + bytes(buf))


class _BrokenHasher:
    """A hasher whose update fails (as MemoryError would): hashing behind the writes."""

    def __init__(self) -> None:
        self.name = "sha256"

    def update(self, data: object) -> None:
        raise MemoryError("no memory for the digest")

    def copy(self) -> _BrokenHasher:
        return self

    def hexdigest(self) -> str:
        raise AssertionError("never asked: the writer is closed")


def test_a_failed_hash_behind_the_writes_closes_the_writer_and_keeps_the_ingest(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(PARALLEL_HASH_MIN * 3)
    w = store.writer("broken")
    w._hasher = _BrokenHasher()
    w.write(data[:PARALLEL_HASH_MIN])
    with pytest.raises(errdefs.Unknown, match="hashing failed"):
        w.digest()
    with pytest.raises(errdefs.FailedPrecondition):
        w.write(data[PARALLEL_HASH_MIN:])  # closed
    with store.writer("broken") as again:  # the resume hashes the file again
        assert again.status().offset == PARALLEL_HASH_MIN
        again.write(data[PARALLEL_HASH_MIN:])
        info = again.commit(len(data), Digest.from_bytes(data))
    assert read_blob(store, info.digest) == data


def test_open_writers_are_counted_until_commit_or_close(store: LocalStore) -> None:
    before = writer_module._open_writers
    a, b = store.writer("a"), store.writer("b")
    assert writer_module._open_writers == before + 2
    a.write(b"a")
    a.commit()
    b.close()
    b.close()  # twice: counted once
    assert writer_module._open_writers == before


def test_reusing_the_buffer_after_write_returns_is_safe(store: LocalStore) -> None:
    buf = bytearray(1 << 20)
    expected = hashlib.sha256()
    with store.writer("reuse") as w:
        for i in range(4):
            buf[:] = bytes([i]) * len(buf)
            w.write(buf)
            expected.update(buf)
        info = w.commit()
    assert info.digest.encoded == expected.hexdigest()


def test_the_hash_pool_works_in_a_forked_child(store: LocalStore) -> None:
    big = os.urandom(PARALLEL_HASH_MIN * 2)
    with store.writer("parent") as w:  # the parent's pool now has threads
        w.write(big)
        w.commit()
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            with store.writer("child") as cw:
                cw.write(big[::-1])
                info = cw.commit()
            os.write(wfd, str(info.digest).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(r, "rb") as f:
        got = f.read().decode()
    os.waitpid(pid, 0)
    assert got == str(Digest.from_bytes(big[::-1]))


def test_status_has_timestamps_total_expected_and_holder(store: LocalStore) -> None:
    data = b"status"
    d = Digest.from_bytes(data)
    w = store.writer("st", Descriptor(d, len(data)))
    ws = w.status()
    assert (ws.total, ws.expected, ws.holder) == (6, d, w.lease.holder)
    assert ws.holder is not None and ws.holder.pid == os.getpid()
    w.write(data[:3])
    st = store.status("st")
    assert (st.offset, st.total, st.expected) == (3, 6, d)
    assert st.started_at == ws.started_at
    assert st.updated_at >= st.started_at
    assert st.holder == w.lease.holder
    w.close()
    assert store.status("st").holder is None


def test_commit_with_empty_label_values_drops_them(store: LocalStore) -> None:
    with store.writer("lbl") as w:
        w.write(b"l")
        info = w.commit(labels={"keep": "1", "drop": ""})
    assert dict(info.labels) == {"keep": "1"}


def test_reopening_a_store_sees_everything(tmp_path: Path) -> None:
    s1 = LocalStore(tmp_path / "s")
    with s1.writer("a") as w:
        w.write(b"committed")
        info = w.commit(labels={"x": "1"})
    w = s1.writer("b")
    w.write(b"partial")
    w.close()
    s2 = LocalStore(tmp_path / "s")
    assert s2.info(info.digest) == info
    assert s2.status("b").offset == 7
    assert s2.verify(info.digest) == info


def test_committing_an_empty_blob(store: LocalStore) -> None:
    with store.writer("empty", Descriptor(EMPTY, 0)) as w:
        info = w.commit(0, EMPTY)
    assert (info.digest, info.size) == (EMPTY, 0)
    assert read_blob(store, EMPTY) == b""


def test_write_after_lease_loss_is_refused(store: LocalStore) -> None:
    w = store.writer("lost")
    w.lease.release()  # e.g. a Redis lease that expired
    with pytest.raises(errdefs.FailedPrecondition):
        w.write(b"x")
    with pytest.raises(errdefs.FailedPrecondition):
        w.commit()
    assert store.status("lost").offset == 0


def test_abort_of_an_incomplete_directory(store: LocalStore) -> None:
    d = ingest_dir(store, "incomplete")
    d.path.mkdir()
    store.abort("incomplete")
    assert not d.path.exists()


def test_store_on_an_unusable_root_is_an_errdefs_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(errdefs.ErrdefsError):
        LocalStore(tmp_path / "file" / "store")


def test_delete_keeps_readers_working(store: LocalStore) -> None:
    with store.writer("r") as w:
        w.write(b"still readable")
        info = w.commit()
    ra = store.reader_at(info.digest)
    store.delete(info.digest)
    assert ra.read_at(0, 100) == b"still readable"
    ra.close()
    with pytest.raises(errdefs.FailedPrecondition):
        ra.read_at(0, 1)


def test_negative_read_length_is_invalid(store: LocalStore) -> None:
    with store.writer("n") as w:
        w.write(b"abc")
        info = w.commit()
    with store.reader_at(info.digest) as ra, pytest.raises(errdefs.InvalidArgument):
        ra.read_at(0, -1)


def test_writeback_is_started_as_the_file_grows_and_failures_only_stop_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ingestq.store.local.writer as writer_module

    calls: list[tuple[int, int]] = []

    def failing(fd: int, offset: int, nbytes: int) -> None:
        calls.append((offset, nbytes))
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(writer_module, "start_writeback", failing)
    step = 1 << 16
    monkeypatch.setattr(writer_module, "WRITEBACK_STEP", step)
    s = LocalStore(tmp_path / "s", fsync=True)
    with s.writer("wb") as w:
        for _ in range(3):
            w.write(b"\0" * step)
        info = w.commit()
    assert calls == [(0, step)]  # tried once, then turned off; the data is intact
    assert info.size == 3 * step

    calls.clear()
    monkeypatch.setattr(writer_module, "start_writeback", lambda fd, o, n: calls.append((o, n)))
    with s.writer("wb2") as w:
        w.write(b"\1" * (step - 1))
        w.write(b"\1" * 2)
        w.truncate(0)
        w.write(b"\2" * (step + 5))
        w.commit()
    assert calls == [(0, step + 1), (0, step + 5)]
    nosync = LocalStore(tmp_path / "n", fsync=False)
    calls.clear()
    with nosync.writer("x") as w:
        w.write(b"\3" * (2 * step))
    assert calls == []  # nothing to gain when commit does not sync


class _InterruptingHasher:
    """sha256 whose first update, once ``asked`` is set, sends this process SIGINT and
    waits for ``go``: the writer is interrupted while it waits for the hash behind its
    writes."""

    def __init__(self, asked: threading.Event, go: threading.Event) -> None:
        self.name = "sha256"
        self._real = hashlib.sha256()
        self._asked = asked
        self._go = go
        self._sent = False

    def update(self, data: memoryview) -> None:
        if not self._sent:
            self._sent = True
            self._asked.wait(30)
            os.kill(os.getpid(), signal.SIGINT)
            self._go.wait(30)
        self._real.update(data)

    def copy(self) -> _InterruptingHasher:
        raise AssertionError("not used on this path")

    def hexdigest(self) -> str:
        return self._real.hexdigest()


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as in an interactive shell, even when pytest was
    started with SIGINT ignored (a background job of a non-interactive shell, nohup)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_raises")
def test_an_interrupt_while_waiting_for_the_hash_stays_an_interrupt(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(PARALLEL_HASH_MIN * 2)
    asked, go = threading.Event(), threading.Event()
    with store.writer("interrupted") as w:
        w._hasher = _InterruptingHasher(asked, go)  # type: ignore[assignment]
        w.write(data)
        with pytest.raises(KeyboardInterrupt):
            asked.set()
            w.digest()  # Ctrl-C while the piece is being hashed: no "hashing failed"
        go.set()
        assert w.digest() == Digest.from_bytes(data)  # the writer goes on
        info = w.commit(len(data))
    assert read_blob(store, info.digest) == data
