"""A store lock file that another process holds and never lets go (a stopped process,
a lock file squatted on purpose): every store operation that waits for it gives up
after ``INGESTQ_LOCK_FILE_WAIT`` seconds with Unavailable naming the lock, changes
nothing, and works again once the holder lets go. The holders are real processes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, Info, LocalStore
from ingestq.store.gc import GcOptions, collect
from ingestq.store.helpers import read_blob, write_blob
from ingestq.store.images import image_index_of
from ingestq.store.leases import leases_lock
from ingestq.store.lockfile import DEFAULT_LOCK_WAIT, LOCK_WAIT_ENV, LockFile, lock_wait
from ingestq.store.values import utcnow
from tests.servers.util import bounded

#: The holder: takes the lock file (OFD lock, as the store does) or flocks a directory,
#: says so, and keeps it until its stdin closes.
_HOLD = """
import fcntl, os, sys
from pathlib import Path
from ingestq.store.lockfile import LockFile
path = Path(sys.argv[2])
if sys.argv[1] == "dir":
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
else:
    assert LockFile(path).acquire(blocking=False), "already held"
print("held", flush=True)
sys.stdin.read()
"""


@contextmanager
def held_elsewhere(path: Path, kind: str = "file") -> Iterator[subprocess.Popen[str]]:
    """``path`` locked by another process until the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, kind, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "held\n"
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(30)


@pytest.fixture
def short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCK_WAIT_ENV, "0.3")


def _unavailable_on(error: BaseException | None, lock: Path) -> errdefs.Unavailable:
    assert isinstance(error, errdefs.Unavailable), repr(error)
    assert error.details.get("lock") == str(lock)
    assert "held by another process" in str(error)
    return error


def _blob(store: LocalStore, data: bytes = b"squatted content") -> Descriptor:
    desc = Descriptor(Digest.from_bytes(data), len(data))
    write_blob(store, "x", io.BytesIO(data), desc)
    return desc


@pytest.mark.parametrize(
    ("text", "seconds"), [("", DEFAULT_LOCK_WAIT), ("0.25", 0.25), (" 600 ", 600.0)]
)
def test_the_wait_comes_from_its_setting(text: str, seconds: float) -> None:
    assert lock_wait({LOCK_WAIT_ENV: text}) == seconds
    assert lock_wait({}) == DEFAULT_LOCK_WAIT


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "soon"])
def test_a_wait_that_is_no_bound_is_refused_when_the_store_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=LOCK_WAIT_ENV):
        lock_wait({LOCK_WAIT_ENV: text})
    monkeypatch.setenv(LOCK_WAIT_ENV, text)
    with pytest.raises(errdefs.InvalidArgument, match=LOCK_WAIT_ENV):
        LocalStore(tmp_path / "store")


@pytest.mark.usefixtures("short_wait")
def test_a_squatted_blob_lock_makes_delete_and_update_unavailable_then_they_work(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store", fsync=False)
    desc = _blob(store)
    lock = store.layout.blob_lock(desc.digest)
    now = utcnow()
    labelled = Info(desc.digest, desc.size, now, now, {"k": "v"})
    with held_elsewhere(lock):
        _unavailable_on(bounded(lambda: store.delete(desc.digest)), lock)
        _unavailable_on(bounded(lambda: store.update(labelled, "labels.k")), lock)
        assert store.info(desc.digest).labels == {}
        assert read_blob(store, desc) == b"squatted content"
    assert store.update(labelled, "labels.k").labels == {"k": "v"}
    store.delete(desc.digest)
    assert not store.exists(desc.digest)


@pytest.mark.usefixtures("short_wait")
def test_a_squatted_blob_lock_makes_a_labelled_put_unavailable_then_it_commits(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store", fsync=False)
    store.blobs.xattrs = False  # labels in a metadata file, written under the blob lock
    data = b"labelled content"
    desc = Descriptor(Digest.from_bytes(data), len(data))
    lock = store.layout.blob_lock(desc.digest)

    def put() -> None:
        write_blob(store, "x", io.BytesIO(data), desc, labels={"k": "v"})

    with held_elsewhere(lock):
        _unavailable_on(bounded(put), lock)
        assert not store.exists(desc.digest)
        with pytest.raises(errdefs.NotFound):  # not taken for a busy ref: no ingest left
            store.status("x")
    put()
    assert store.info(desc.digest).labels == {"k": "v"}


@pytest.mark.usefixtures("short_wait")
def test_a_squatted_leases_lock_makes_lease_edits_unavailable(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store", fsync=False)
    leases = store.leases()
    leases.create("default", "kept", {})
    lock = leases_lock(store.layout)
    with held_elsewhere(lock):
        _unavailable_on(bounded(lambda: leases.create("default", "new", {})), lock)
        _unavailable_on(bounded(lambda: leases.delete("default", "kept")), lock)
    assert [lease.id for lease in leases.list("default")] == ["kept"]
    leases.create("default", "new", {})


@pytest.mark.usefixtures("short_wait")
def test_a_squatted_index_lock_makes_image_changes_and_gc_unavailable(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store", fsync=False)
    desc = _blob(store, b"unreferenced")
    index = image_index_of(store, store.root)
    lock = store.layout.index_lock
    with held_elsewhere(lock):
        _unavailable_on(bounded(lambda: index.put("app:1", desc)), lock)
        _unavailable_on(bounded(lambda: collect(store, GcOptions())), lock)
        assert store.exists(desc.digest)
    assert index.list() == []
    report = collect(store, GcOptions())
    assert [name for name, _ in report.blobs] == [str(desc.digest)]


@pytest.mark.usefixtures("short_wait")
def test_a_planted_lock_whose_directory_is_squatted_is_unavailable(tmp_path: Path) -> None:
    """Removing a FIFO planted as a lock file takes the lock directory's flock, which
    anyone who can read the directory can hold."""
    store = LocalStore(tmp_path / "store", fsync=False)
    desc = _blob(store)
    lock = store.layout.blob_lock(desc.digest)
    os.mkfifo(lock)
    with held_elsewhere(lock.parent, "dir"):
        error = bounded(lambda: store.delete(desc.digest))
        assert isinstance(error, errdefs.Unavailable), repr(error)
        assert str(lock.parent) in str(error)
    store.delete(desc.digest)
    assert not store.exists(desc.digest)


def test_a_waiter_takes_the_lock_when_its_holder_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    got: list[bool] = []
    with held_elsewhere(path) as holder:
        waiter = LockFile(path)
        thread = threading.Thread(target=lambda: got.append(waiter.acquire_within(60)))
        thread.start()
        assert holder.stdin is not None
        holder.stdin.close()  # the holder exits: the kernel drops its lock
        thread.join(60)
    assert got == [True]
    assert waiter.held
    assert not LockFile(path).acquire(blocking=False)
    waiter.release()


def test_acquire_within_gives_up_on_a_holder_that_stays(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with held_elsewhere(path):
        waiter = LockFile(path)
        assert waiter.acquire_within(0.2) is False
        assert not waiter.held
