"""Ref locks: the lock file (OFD locks and the flock fallback), FileRefLocker (messages,
holders, cleanup) and ChainLocker."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store import ChainLocker, FileRefLocker, Holder
from ingestq.store import lockfile as lockfile_module
from ingestq.store.lockfile import HAVE_OFD, LockFile, probe
from ingestq.store.locks import Lease, lock_domains, locked_error, shared_domains
from ingestq.store.values import utcnow

BACKENDS = [pytest.param(True, id="ofd"), pytest.param(False, id="flock")]


def test_this_host_has_ofd_locks() -> None:
    assert HAVE_OFD  # CI runs on Linux; the fallback is tested explicitly below


@pytest.mark.parametrize("ofd", BACKENDS)
def test_lock_file_excludes_other_descriptors_and_is_removed_on_release(
    tmp_path: Path, ofd: bool
) -> None:
    path = tmp_path / "x.lock"
    a, b = LockFile(path, use_ofd=ofd), LockFile(path, use_ofd=ofd)
    assert a.acquire(blocking=False)
    assert not b.acquire(blocking=False)
    a.write_text("holder record")
    found = probe(path, use_ofd=ofd)
    assert (found.held, found.text) == (True, "holder record")
    a.release()
    a.release()  # twice is fine
    assert not path.exists()
    assert probe(path, use_ofd=ofd).held is False
    assert b.acquire(blocking=False)
    b.release()


@pytest.mark.parametrize("ofd", BACKENDS)
def test_blocking_acquire_waits_and_survives_the_unlink(tmp_path: Path, ofd: bool) -> None:
    path = tmp_path / "x.lock"
    first = LockFile(path, use_ofd=ofd)
    assert first.acquire(blocking=True)
    got = threading.Event()
    second = LockFile(path, use_ofd=ofd)

    def wait_for_it() -> None:
        second.acquire(blocking=True)
        got.set()

    t = threading.Thread(target=wait_for_it)
    t.start()
    assert not got.is_set()
    first.release()  # unlinks the file the waiter may be blocked on
    t.join(30)
    assert got.is_set()
    assert path.exists() and second.held
    # The waiter holds the file that the path names, so a third party is excluded.
    assert not LockFile(path, use_ofd=ofd).acquire(blocking=False)
    second.release()


def test_probe_of_a_missing_file_is_not_held(tmp_path: Path) -> None:
    assert probe(tmp_path / "none.lock").held is False


@pytest.mark.parametrize("ofd", BACKENDS)
def test_file_ref_locker(tmp_path: Path, ofd: bool) -> None:
    locker = FileRefLocker(tmp_path, use_ofd=ofd)
    assert locker.holder("layer-1") is None
    lease = locker.try_lock("layer-1", "me/1/abc")
    h = locker.holder("layer-1")
    assert h == lease.holder
    assert (h.id, h.acquired_at) == ("me/1/abc", h.heartbeat_at)
    with pytest.raises(errdefs.Unavailable) as exc:
        locker.try_lock("layer-1", "other")
    msg = str(exc.value)
    assert msg.startswith("ref layer-1 locked for ")
    assert f"s (since {h.acquired_at.isoformat()}): unavailable" in msg
    assert exc.value.details == {
        "ref": "layer-1",
        "holder": "me/1/abc",
        "since": h.acquired_at.isoformat(),
    }
    lease.check()
    locker.try_lock("layer-2", "x").release()  # other refs are independent
    lease.release()
    with pytest.raises(errdefs.FailedPrecondition):
        lease.check()
    assert locker.holder("layer-1") is None
    assert list(tmp_path.iterdir()) == []
    locker.try_lock("layer-1", "other").release()


def test_threads_exclude_each_other(tmp_path: Path) -> None:
    locker = FileRefLocker(tmp_path)
    barrier = threading.Barrier(8)
    won: list[Lease] = []
    lost: list[errdefs.Unavailable] = []
    mutex = threading.Lock()

    def race() -> None:
        barrier.wait(30)
        try:
            lease = locker.try_lock("contended", threading.current_thread().name)
        except errdefs.Unavailable as e:
            with mutex:
                lost.append(e)
            return
        with mutex:
            won.append(lease)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Every loser tried while the winner held the lock (it is released only below).
    assert (len(won), len(lost)) == (1, 7)
    won[0].release()


def test_lock_in_an_unwritable_place_is_an_errdefs_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(errdefs.ErrdefsError) as exc:
        FileRefLocker(blocker / "locks").try_lock("r", "me")
    assert "lock ref r" in str(exc.value)


def test_locked_error_without_a_known_time() -> None:
    e = locked_error("r", None)
    assert str(e) == "ref r locked: unavailable"


class FakeLocker:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name, self.fail = name, fail
        self.released = 0
        self.current: Holder | None = None

    def try_lock(self, ref: str, holder_id: str) -> Lease:
        if self.fail:
            raise errdefs.Unavailable(f"ref {ref} locked by {self.name}")
        now = utcnow()
        holder = Holder(f"{self.name}:{holder_id}", self.name, 1, now, now)
        locker = self

        class _L:
            @property
            def holder(self) -> Holder:
                return holder

            def check(self) -> None:
                pass

            def release(self) -> None:
                locker.released += 1

        self.current = holder
        return _L()

    def holder(self, ref: str) -> Holder | None:
        return self.current


def test_chain_locker_takes_all_and_releases_taken_ones_on_failure() -> None:
    a, b = FakeLocker("a"), FakeLocker("b", fail=True)
    with pytest.raises(errdefs.Unavailable):
        ChainLocker([a, b]).try_lock("r", "me")
    assert a.released == 1
    c = FakeLocker("c")
    chain = ChainLocker([a, c])
    lease = chain.try_lock("r", "me")
    assert lease.holder.id == "c:me"
    assert chain.holder("r") is not None and chain.holder("r").id == "c:me"  # type: ignore[union-attr]
    lease.check()
    lease.release()
    assert (a.released, c.released) == (2, 1)


def test_lockers_name_their_domains_and_a_chain_spans_them_all(tmp_path: Path) -> None:
    here, there = FileRefLocker(tmp_path / "a"), FileRefLocker(tmp_path / "b")
    assert lock_domains(here) == lock_domains(FileRefLocker(tmp_path / "a"))
    assert not lock_domains(here) & lock_domains(there)
    chain = ChainLocker([here, there])
    assert lock_domains(chain) == lock_domains(here) | lock_domains(there)
    plain = FakeLocker("x")  # names no domains: one of its own, for this object alone
    assert lock_domains(plain) == lock_domains(plain)
    assert not lock_domains(plain) & lock_domains(FakeLocker("x"))


class _CrossHost(FakeLocker):
    """A locker every host shares (as the Redis lease is)."""

    @property
    def domains(self) -> frozenset[str]:
        return frozenset({"cross://one"})


def test_the_shared_domains_leave_out_this_hosts_lock_directory(tmp_path: Path) -> None:
    """What a job that goes on on other hosts names: a chain's cross-host lockers only;
    a host's lock directory alone (or a locker without domains) gives a domain of its
    own, which no other locker shares."""
    here = FileRefLocker(tmp_path / "a")
    cross = _CrossHost("c")
    assert shared_domains(ChainLocker([here, cross])) == {"cross://one"}
    assert shared_domains(cross) == {"cross://one"}
    for alone in (here, ChainLocker([here]), FakeLocker("x")):
        mine = shared_domains(alone)
        assert len(mine) == 1 and next(iter(mine)).startswith("object://"), mine
        assert not mine & lock_domains(here)


def test_removing_a_planted_entry_never_removes_a_lock_file_made_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A and B both find a FIFO planted at the lock path. B removes it first, makes the
    # lock file and holds it; only then does A get to remove "the planted entry". A
    # must leave B's lock file alone and find the lock taken.
    path = tmp_path / "x.lock"
    os.mkfifo(path)
    a, b = LockFile(path), LockFile(path)
    real_remove = lockfile_module._remove_planted
    calls = 0

    def b_first(at: Path, deadline: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # A is about to remove: let B run its whole acquire before it
            monkeypatch.setattr(lockfile_module, "_remove_planted", real_remove)
            assert b.acquire(blocking=False)
            monkeypatch.setattr(lockfile_module, "_remove_planted", b_first)
        real_remove(at, deadline)

    monkeypatch.setattr(lockfile_module, "_remove_planted", b_first)
    assert a.acquire(blocking=False) is False
    assert b.held and path.is_file()
    b.release()
    assert a.acquire(blocking=False)
    a.release()


def test_a_directory_planted_as_a_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "d.lock"
    path.mkdir()  # empty: removed, and a lock file made in its place
    lock = LockFile(path)
    assert lock.acquire(blocking=False)
    assert path.is_file()
    lock.release()
    path.mkdir()
    (path / "inside").write_bytes(b"")  # not empty: left alone, and an error says why
    with pytest.raises(OSError) as e:
        LockFile(path).acquire(blocking=False)
    assert e.value.errno == errno.ENOTEMPTY
    assert (path / "inside").exists()
    assert probe(path).held is False
