"""Correctness without the lock: the ref lock only makes duplicate work rare.

Every test replaces the store's locker with one that always grants, forcing several
writers onto one ref, and checks the invariants of DESIGN.md: every published blob
matches its digest, and a writer that lost its file to another can never change the
bytes that other one commits."""

from __future__ import annotations

import contextlib
import os
import random
import threading
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, Holder, LocalStore, read_blob
from ingestq.store.local import blobs as blobs_module
from ingestq.store.local import small as small_module
from ingestq.store.locks import FileRefLocker
from ingestq.store.values import utcnow


class _Granted:
    def __init__(self, holder_id: str) -> None:
        now = utcnow()
        self.holder = Holder(holder_id, "test", os.getpid(), now, now)

    def check(self) -> None:
        pass

    def release(self) -> None:
        pass


class GrantAll:
    """A RefLocker that never refuses: what an expired lease looks like to the store."""

    def try_lock(self, ref: str, holder_id: str) -> _Granted:
        return _Granted(holder_id)

    def holder(self, ref: str) -> Holder | None:
        return None


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    s = LocalStore(tmp_path / "store", fsync=False)
    s.locker = GrantAll()
    return s


def assert_all_blobs_sound(store: LocalStore) -> int:
    """Every published blob hashes to its name; returns how many there are."""
    infos = list(store.walk())
    for info in infos:
        store.verify(info.digest)
        assert read_blob(store, info.digest)
    return len(infos)


def test_grant_all_really_bypasses_the_lock(store: LocalStore) -> None:
    w1 = store.writer("r")
    w2 = store.writer("r")  # would be Unavailable with a real locker
    w1.close()
    w2.close()


def test_interleaved_writers_on_one_ref(store: LocalStore) -> None:
    a, b = b"A" * 300_000, b"B" * 200_000
    w1 = store.writer("shared")
    w2 = store.writer("shared")
    for i in range(0, 300_000, 50_000):
        w1.write(a[i : i + 50_000])
        w2.write(b[i : i + 50_000])
    results: list[object] = []
    for w in (w1, w2):
        try:
            results.append(w.commit())
        except (errdefs.FailedPrecondition, errdefs.AlreadyExists) as e:
            results.append(e)
    committed = [r for r in results if not isinstance(r, Exception)]
    assert committed, results
    for info in committed:
        got = read_blob(store, info.digest)  # type: ignore[attr-defined]
        assert got in (a, b)  # each writer's own bytes, never a mix
    assert assert_all_blobs_sound(store) == len(committed)


def test_stale_writer_cannot_change_what_the_new_writer_commits(store: LocalStore) -> None:
    data = random.Random(1).randbytes(400_000)
    stale = store.writer("takeover")
    stale.write(data[:150_000])
    new = store.writer("takeover")  # the stale writer's lease "expired": take over
    assert new.status().offset == 150_000
    # The stale writer carries on: appends garbage, restarts, appends more.
    stale.write(b"\xff" * 10_000)
    stale.truncate(0)
    stale.write(b"\x00" * 500_000)
    new.write(data[150_000:])
    info = new.commit(len(data), Digest.from_bytes(data))
    assert read_blob(store, info.digest) == data
    stale.write(b"\xee" * 1000)
    with pytest.raises(errdefs.FailedPrecondition):
        stale.commit()  # its file was taken from it
    assert read_blob(store, info.digest) == data
    assert assert_all_blobs_sound(store) == 1


def test_stale_writer_committing_first_publishes_only_its_own_bytes(store: LocalStore) -> None:
    data = random.Random(2).randbytes(100_000)
    stale = store.writer("race")
    stale.write(data[:60_000])
    new = store.writer("race")
    stale.write(b"stale tail")
    with pytest.raises(errdefs.FailedPrecondition):
        stale.commit()
    new.write(data[60_000:])
    assert new.commit(len(data), Digest.from_bytes(data)).digest == Digest.from_bytes(data)
    assert assert_all_blobs_sound(store) == 1


def test_writers_racing_for_a_sealed_ingest_publish_what_they_adopted_and_wrote(
    store: LocalStore,
) -> None:
    prefix = random.Random(3).randbytes(200_000)
    w = store.writer("sealed")
    w.write(prefix)
    w.close()  # sealed: the next writer may take the file over in place (by rename)
    n = 8
    barrier = threading.Barrier(n)
    outcomes: list[tuple[int, Digest, bytes, object]] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait(30)
        w = store.writer("sealed")
        offset, adopted = w.status().offset, w.digest()
        suffix = f"writer {i}".encode() * 1000
        w.write(suffix)
        try:
            result: object = w.commit()
        except (errdefs.FailedPrecondition, errdefs.AlreadyExists) as e:
            result = e
        with lock:
            outcomes.append((offset, adopted, suffix, result))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == n
    committed = 0
    for offset, adopted, suffix, result in outcomes:
        if isinstance(result, Exception):
            continue
        committed += 1
        got = read_blob(store, result.digest)  # type: ignore[attr-defined]
        # The digest covers exactly what was adopted plus what was written.
        assert Digest.from_bytes(got[:offset]) == adopted
        assert got[offset:] == suffix
    # Whatever the race left, the ingest is still usable.
    with store.writer("sealed") as w:
        w.write(b"final")
        w.commit()
    assert assert_all_blobs_sound(store) == committed + 1


def test_a_writer_opening_during_a_commit_cannot_touch_the_published_inode(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random.Random(4).randbytes(50_000)
    w = store.writer("commit-race")
    w.write(data)
    intruders = []
    real_link = small_module.link_descriptor

    def link_then_intrude(fd: int, target: Path) -> bool:
        linked = real_link(fd, target)
        assert linked  # the blob is the writer's open file, linked through /proc
        # Between publishing and dropping the ingest, another writer takes the ref.
        intruder = store.writer("commit-race")
        intruder.write(b"\x00" * 100_000)
        intruders.append(intruder)
        return linked

    monkeypatch.setattr(blobs_module, "link_descriptor", link_then_intrude)
    info = w.commit(len(data), Digest.from_bytes(data))
    monkeypatch.setattr(blobs_module, "link_descriptor", real_link)
    intruders[0].truncate(0)
    intruders[0].write(b"\x11" * 70_000)
    intruders[0].close()
    assert read_blob(store, info.digest) == data
    assert assert_all_blobs_sound(store) == 1


def test_threads_hammering_one_ref_only_publish_sound_blobs(store: LocalStore) -> None:
    n = 6
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        rng = random.Random(i)
        try:
            barrier.wait(30)
            for _ in range(5):
                w = store.writer("hammer")
                for _ in range(rng.randrange(1, 6)):
                    w.write(rng.randbytes(rng.randrange(1, 300_000)))
                    if rng.random() < 0.1:
                        w.truncate(0)
                action = rng.random()
                if action < 0.6:
                    with contextlib.suppress(errdefs.FailedPrecondition, errdefs.AlreadyExists):
                        w.commit()
                else:
                    w.close()
        except BaseException as e:  # report in the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    published = assert_all_blobs_sound(store)
    with store.writer("hammer") as w:  # the ingest survives the chaos
        w.write(b"after")
        info = w.commit()
    assert read_blob(store, info.digest).endswith(b"after")
    assert assert_all_blobs_sound(store) == published + 1


def test_the_real_locker_is_what_prevents_duplicates(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store", fsync=False)
    assert isinstance(store.locker, FileRefLocker)
    with (
        store.writer("r", Descriptor(Digest.from_bytes(b"x"), 1)),
        pytest.raises(errdefs.Unavailable),
    ):
        store.writer("r")


def test_puts_and_writers_forced_onto_one_ref_only_publish_sound_blobs(store: LocalStore) -> None:
    """Small puts (with and without an unfinished ingest of the ref, so both of put's
    paths) race writers on the same ref and content with the lock granted to all."""
    n = 6
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []
    contents = [random.Random(k).randbytes(3000) for k in range(8)]  # one total per ref
    published: list[Digest] = []

    def run(i: int) -> None:
        rng = random.Random(i)
        try:
            barrier.wait(30)
            for _ in range(20):
                data = rng.choice(contents)
                desc = Descriptor(Digest.from_bytes(data), len(data))
                if rng.random() < 0.5:
                    with contextlib.suppress(
                        errdefs.AlreadyExists, errdefs.FailedPrecondition, errdefs.Aborted
                    ):
                        published.append(store.put("mixed", desc, data).digest)
                    continue
                try:
                    w = store.writer("mixed", desc)
                except (errdefs.AlreadyExists, errdefs.Aborted):
                    continue
                w.write(data[w.status().offset : rng.randrange(len(data) + 1)])
                if rng.random() < 0.3:
                    w.close()  # leave an unfinished ingest for the next put to finish
                    continue
                with contextlib.suppress(
                    errdefs.AlreadyExists, errdefs.FailedPrecondition, errdefs.DataLoss
                ):
                    w.write(data[w.status().offset :])
                    published.append(w.commit(len(data), desc.digest).digest)
                w.close()
        except BaseException as e:  # report in the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert assert_all_blobs_sound(store) == len(set(published)) > 0
    assert {i.digest for i in store.walk()} <= {Digest.from_bytes(c) for c in contents}
    for data in contents:  # whatever is left, put finishes it
        with contextlib.suppress(errdefs.AlreadyExists):
            store.put("mixed", Descriptor(Digest.from_bytes(data), len(data)), data)
        assert read_blob(store, Digest.from_bytes(data)) == data


def test_put_of_data_that_is_not_its_descriptor_keeps_the_unfinished_ingest(
    store: LocalStore,
) -> None:
    real = os.urandom(3000)
    desc = Descriptor(Digest.from_bytes(real), len(real))
    w = store.writer("kept", desc)
    w.write(real[:1000])
    w.close()
    with pytest.raises(errdefs.FailedPrecondition):
        store.put("kept", desc, os.urandom(3000))
    assert store.status("kept").offset == 1000  # another writer's progress survives
