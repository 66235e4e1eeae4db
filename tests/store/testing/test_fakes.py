"""FakeRefLocker (store.testing): playing the other side of a lock contention, against
the in-memory and the local store."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store import Backoff, Descriptor, Digest, LocalStore, open_writer, write_blob
from ingestq.store.memory import MemoryStore
from ingestq.store.testing import FakeRefLocker


def test_hold_makes_a_store_meet_a_locked_ref(tmp_path: Path) -> None:
    locker = FakeRefLocker()
    store = LocalStore(tmp_path, [locker], fsync=False)
    held = locker.hold("layer-1", "worker-b")
    with pytest.raises(errdefs.Unavailable) as exc:
        store.writer("layer-1")
    assert "layer-1 locked for" in str(exc.value)
    assert exc.value.details["holder"] == "worker-b"
    assert list((tmp_path / "locks").iterdir()) == []  # the file lock was given back
    status_holder = store.locker.holder("layer-1")
    assert status_holder is not None and status_holder.id == "worker-b"
    held.release()
    store.writer("layer-1").close()
    assert locker.attempts == ["layer-1", "layer-1"]


def test_refuse_exercises_open_writer_retries() -> None:
    locker = FakeRefLocker()
    store = MemoryStore(locker)
    locker.refuse("ref", times=3)
    waits: list[errdefs.Unavailable] = []
    slept: list[float] = []
    backoff = Backoff(0.001, 0.002)
    w = open_writer(store, "ref", backoff=backoff, sleep=slept.append, on_wait=waits.append)
    w.close()
    assert (len(waits), len(slept), locker.attempts) == (3, 3, ["ref"] * 4)


def test_lose_stops_the_writer_at_its_next_step(tmp_path: Path) -> None:
    locker = FakeRefLocker()
    store = LocalStore(tmp_path, [locker], fsync=False)
    data = b"z" * 1000
    w = store.writer("ref", Descriptor(Digest.from_bytes(data), len(data)))
    w.write(data[:10])
    lease = locker.lose("ref")
    assert lease.lost
    with pytest.raises(errdefs.FailedPrecondition, match="lost"):
        w.write(data[10:])
    w.close()
    assert write_blob(store, "ref", io.BytesIO(data), Descriptor(Digest.from_bytes(data), 1000))
    with pytest.raises(errdefs.NotFound):
        locker.lose("ref")  # nobody holds it now
