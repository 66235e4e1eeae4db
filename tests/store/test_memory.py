"""MemoryStore and MemoryRefLocker (store.memory) beyond the contract
(tests/store/test_memory_contract.py runs that): locks between threads, a writer that
loses its lease, snapshots for readers, other digest algorithms."""

from __future__ import annotations

import io
import threading

import pytest

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, read_blob, write_blob
from ingestq.store.locks import Lease
from ingestq.store.memory import MemoryRefLocker, MemoryStore
from ingestq.store.testing import FakeRefLocker


def test_threads_exclude_each_other_on_a_ref() -> None:
    locker = MemoryRefLocker()
    barrier = threading.Barrier(8)
    won: list[Lease] = []
    lost: list[errdefs.Unavailable] = []
    mutex = threading.Lock()

    def race(i: int) -> None:
        barrier.wait(30)
        try:
            lease = locker.try_lock("ref", f"t{i}")
        except errdefs.Unavailable as e:
            with mutex:
                lost.append(e)
        else:
            with mutex:
                won.append(lease)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert (len(won), len(lost)) == (1, 7)
    holder = locker.holder("ref")
    assert holder is not None and holder.id == won[0].holder.id
    assert all(e.details["holder"] == holder.id for e in lost)
    assert all("ref ref locked for" in str(e) for e in lost)
    won[0].release()
    won[0].release()  # twice is fine
    assert locker.holder("ref") is None
    with pytest.raises(errdefs.FailedPrecondition):
        won[0].check()


def test_a_writer_that_loses_its_lease_stops_and_the_next_one_resumes() -> None:
    locker = FakeRefLocker()
    store = MemoryStore(locker)
    data = b"0123456789" * 100
    w = store.writer("ref", Descriptor(Digest.from_bytes(data), len(data)))
    w.write(data[:300])
    locker.lose("ref")
    with pytest.raises(errdefs.FailedPrecondition, match="lost"):
        w.write(data[300:])
    w2 = store.writer("ref", Descriptor(Digest.from_bytes(data), len(data)))
    assert w2.status().offset == 300
    with pytest.raises(errdefs.FailedPrecondition):
        w.commit(len(data), Digest.from_bytes(data))  # the stale writer cannot publish
    w2.write(data[300:])
    info = w2.commit(len(data), Digest.from_bytes(data))
    assert read_blob(store, info.digest) == data


def test_a_writer_whose_ingest_was_aborted_cannot_commit() -> None:
    locker = FakeRefLocker()
    store = MemoryStore(locker)
    w = store.writer("ref")
    w.write(b"abc")
    locker.lose("ref")
    store.abort("ref")
    with pytest.raises(errdefs.FailedPrecondition):
        w.commit(3, Digest.from_bytes(b"abc"))
    with pytest.raises(errdefs.NotFound):
        store.info(Digest.from_bytes(b"abc"))


def test_readers_keep_a_snapshot_of_deleted_content() -> None:
    store = MemoryStore()
    desc = Descriptor(Digest.from_bytes(b"hello"), 5)
    info = write_blob(store, "ref", io.BytesIO(b"hello"), desc)
    assert info is not None
    with store.reader_at(info.digest) as ra:
        store.delete(info.digest)
        assert ra.read_at(1, 3) == b"ell"
    with pytest.raises(errdefs.FailedPrecondition):
        ra.read_at(0, 1)
    assert not store.exists(info.digest)


def test_sha512_content_is_hashed_with_sha512() -> None:
    store = MemoryStore()
    d = Digest.from_bytes(b"x" * 10, "sha512")
    with store.writer("ref", Descriptor(d, 10)) as w:
        w.write(b"x" * 10)
        assert w.digest() == d
        assert w.commit(10, d).digest == d
    with store.writer("other") as w:  # sha256 writer, sha512 commit: re-hashed
        w.write(b"y")
        yd = Digest.from_bytes(b"y", "sha512")
        assert w.commit(1, yd).digest == yd
    assert [i.digest.algorithm for i in store.walk()] == ["sha512", "sha512"]
