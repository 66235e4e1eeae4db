"""Disk full and permission errors surface as ResourceExhausted / PermissionDenied, and
leave the ingest resumable.

Real mechanisms only: a small tmpfs (mounted here, as CI runs as root), the
RLIMIT_FSIZE limit (EFBIG) in a child process, and a child process that drops to the
``nobody`` user against root-owned directories. When tmpfs cannot be mounted the
disk-full scenario runs under RLIMIT_FSIZE instead, so nothing is skipped.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import resource
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, LocalStore, copy, read_blob
from ingestq.store.locks import ref_key

CHUNK = 64 * 1024


def content(size: int, seed: int = 0) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


# child processes -----------------------------------------------------------------------
def run_in_child(
    fn: Callable[[], Any], *, user: str | None = None, fsize: int | None = None
) -> Any:
    """Run ``fn`` in a forked child (optionally as ``user`` and with RLIMIT_FSIZE) and
    return its result (JSON: tuples come back as lists), or raise its error here (as its
    errdefs kind, through the errdefs JSON record; anything else is Unknown). Forked, not
    spawned: the child must run as a user that may not be able to read the
    interpreter's files."""
    errdefs.to_json_dict(RuntimeError("warm-up"))  # its lazy imports, before the user drops
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            if fsize is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG, not a signal
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            if user is not None:
                pw = pwd.getpwnam(user)
                os.setgroups([])
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
            try:
                payload = json.dumps({"ok": fn()})
            except BaseException as e:
                payload = json.dumps({"error": errdefs.to_json_dict(e)})
        except BaseException as e:
            setup = RuntimeError(f"child setup failed: {e!r}")
            payload = json.dumps({"error": errdefs.to_json_dict(setup)})
        with os.fdopen(w, "w") as f:
            f.write(payload)
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        payload = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    outcome = json.loads(payload)
    if "error" in outcome:
        raise errdefs.from_json_dict(outcome["error"])
    return outcome["ok"]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="ingestq-perm-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def chown_tree(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    for dirpath, _, filenames in os.walk(path):
        os.chown(dirpath, pw.pw_uid, pw.pw_gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), pw.pw_uid, pw.pw_gid)


# disk full -----------------------------------------------------------------------------
@contextlib.contextmanager
def small_tmpfs(path: Path, options: str) -> Iterator[Path | None]:
    """A freshly mounted tmpfs at ``path`` (None if this host does not allow it)."""
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def write_until_error(w: Any, data: bytes) -> errdefs.ErrdefsError:
    """Write ``data`` from the writer's offset in chunks until an error; return it."""
    for i in range(w.status().offset, len(data), CHUNK):
        try:
            w.write(data[i : i + CHUNK])
        except errdefs.ErrdefsError as e:
            return e
    raise AssertionError("the write did not fail")


def test_disk_full_on_tmpfs_is_resource_exhausted_and_resumable(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "mnt", "size=4m") as mnt:
        if mnt is None:
            disk_full_under_rlimit(tmp_path)
            return
        root = mnt / "store"
        store = LocalStore(root)
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * (2 << 20))
        data = content(3 << 20, seed=1)
        ref = "layer-sha256:full"

        w = store.writer(ref, Descriptor(Digest.from_bytes(data), len(data)))
        err = write_until_error(w, data)
        assert isinstance(err, errdefs.ResourceExhausted)
        assert "No space left on device" in str(err)
        first = w.status().offset
        assert 0 < first < len(data)
        assert w.digest() == Digest.from_bytes(data[:first])
        w.close()
        assert store.status(ref).offset == first

        # Free a little: too little to copy the prefix, enough to take the sealed
        # file over in place and make progress.
        with open(filler, "r+b") as f:
            f.truncate(filler.stat().st_size - (256 << 10))
        w = store.writer(ref, Descriptor(Digest.from_bytes(data), len(data)))
        assert w.status().offset == first
        err = write_until_error(w, data)
        assert isinstance(err, errdefs.ResourceExhausted)
        second = w.status().offset
        assert second > first
        w.close()

        filler.unlink()
        with store.writer(ref, Descriptor(Digest.from_bytes(data), len(data))) as w:
            assert w.status().offset == second
            info = copy(w, io.BytesIO(data), len(data), Digest.from_bytes(data))
        assert info is not None
        assert read_blob(store, info.digest) == data
        assert store.list_statuses() == []


def test_commit_on_a_full_disk_publishes_nothing_and_keeps_the_ingest(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "mnt", "size=2m") as mnt:
        if mnt is None:
            disk_full_under_rlimit(tmp_path)
            return
        store = LocalStore(mnt / "store")
        data = content(1 << 20, seed=2)
        w = store.writer("commit-full")
        w.write(data)
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
        with contextlib.suppress(OSError):
            while True:  # take every page left
                os.write(fd, b"\0" * 4096)
        os.close(fd)
        with pytest.raises(errdefs.ResourceExhausted):
            w.commit(len(data), Digest.from_bytes(data), {"label": "x" * 3000})
        assert not store.exists(Digest.from_bytes(data))
        assert list(store.walk()) == []
        filler.unlink()
        with store.writer("commit-full") as w:
            assert w.status().offset == len(data)
            info = w.commit(len(data), Digest.from_bytes(data), {"label": "x"})
        assert dict(info.labels) == {"label": "x"}
        assert read_blob(store, info.digest) == data


def test_no_inodes_left_is_resource_exhausted_and_releases_the_lock(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "mnt", "size=4m,nr_inodes=64") as mnt:
        if mnt is None:
            disk_full_under_rlimit(tmp_path)
            return
        store = LocalStore(mnt / "store")
        hog = mnt / "hog"
        hog.mkdir()
        with contextlib.suppress(OSError):
            for i in range(1000):
                (hog / str(i)).touch()
        with pytest.raises(errdefs.ResourceExhausted):
            store.writer("no-inodes")
        shutil.rmtree(hog)
        with store.writer("no-inodes") as w:  # the lock was released
            w.write(b"ok")
            assert w.commit(2).size == 2


def _exhaust(mnt: Path, room: str) -> list[Path]:
    """Use up ``room`` ("space": data pages; "inodes") on the tmpfs at ``mnt``; return
    the hogs, each of which frees one unit (a page, an inode) when removed."""
    hog = mnt / "hog"
    hog.mkdir()
    hogs: list[Path] = []
    with contextlib.suppress(OSError):
        for i in range(100_000):
            path = hog / str(i)
            if room == "space":
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    os.write(fd, b"\0" * 4096)
                finally:
                    os.close(fd)
            else:
                path.touch()
            hogs.append(path)
    assert len(hogs) < 100_000, "the tmpfs never filled up"
    return hogs


@pytest.mark.parametrize(
    ("room", "options"), [("space", "size=64k"), ("inodes", "size=4m,nr_inodes=64")]
)
def test_a_full_disk_while_starting_an_ingest_leaves_no_ingest_directory(
    tmp_path: Path, room: str, options: str
) -> None:
    """Whatever step of starting an ingest runs out of room (the lock file, the ingest
    directory, its first files, the data file), the writer fails with ResourceExhausted
    and leaves nothing under ``ingest/``; with enough room it starts."""
    with small_tmpfs(tmp_path / "mnt", options) as mnt:
        assert mnt is not None, "mounting a tmpfs needs root (CI runs as root)"
        store = LocalStore(mnt / "store")
        hogs = _exhaust(mnt, room)
        failures: list[str] = []
        while hogs:
            try:
                w = store.writer("layer-sha256:starting")
            except errdefs.ResourceExhausted as e:
                failures.append(str(e))
                assert os.listdir(mnt / "store" / "ingest") == [], failures
                hogs.pop().unlink()  # one more page or inode of room
                continue
            w.close()
            break
        assert hogs, "the writer never started"
        # Some attempt failed after the ingest directory was made, not only at the lock.
        assert any(msg.startswith("open ingest") for msg in failures), failures
        assert "No space left on device" in failures[-1]


def disk_full_under_rlimit(tmp_path: Path) -> None:
    """The disk-full scenario with RLIMIT_FSIZE: a child writes past the limit (EFBIG),
    then this process resumes the ingest and commits it."""
    root = tmp_path / "store"
    LocalStore(root)
    data = content(2 << 20, seed=3)
    limit = 1 << 20

    def child() -> tuple[str, str, int, int]:
        store = LocalStore(root)
        w = store.writer("efbig", Descriptor(Digest.from_bytes(data), len(data)))
        err = write_until_error(w, data)
        offset = w.status().offset
        w.close()
        return type(err).__name__, str(err), offset, store.status("efbig").offset

    kind, msg, offset, stored = run_in_child(child, fsize=limit)
    assert kind == "ResourceExhausted"
    assert "File too large" in msg
    assert offset == stored == limit
    store = LocalStore(root)
    with store.writer("efbig", Descriptor(Digest.from_bytes(data), len(data))) as w:
        assert w.status().offset == limit
        assert w.digest() == Digest.from_bytes(data[:limit])
        info = copy(w, io.BytesIO(data), len(data), Digest.from_bytes(data))
    assert info is not None
    assert read_blob(store, info.digest) == data


def test_file_size_limit_is_resource_exhausted_and_resumable(tmp_path: Path) -> None:
    disk_full_under_rlimit(tmp_path)


# permissions -------------------------------------------------------------------------
def test_nobody_cannot_lock_in_a_root_owned_store(shared_dir: Path) -> None:
    root = shared_dir / "store"
    LocalStore(root)

    def child() -> None:
        LocalStore(root).writer("denied")

    with pytest.raises(errdefs.PermissionDenied) as exc:
        run_in_child(child, user="nobody")
    assert "lock ref denied" in str(exc.value)
    assert list((root / "locks").iterdir()) == []
    LocalStore(root).writer("denied").close()  # root is not blocked by anything left


def test_nobody_cannot_start_an_ingest_in_a_root_owned_ingest_dir(shared_dir: Path) -> None:
    root = shared_dir / "store"
    LocalStore(root)
    (root / "locks").chmod(0o777)

    def child() -> None:
        LocalStore(root).writer("no-ingest")

    with pytest.raises(errdefs.PermissionDenied) as exc:
        run_in_child(child, user="nobody")
    assert "open ingest no-ingest" in str(exc.value)
    assert list((root / "ingest").iterdir()) == []
    LocalStore(root).writer("no-ingest").close()  # and the lock was released


def test_commit_into_a_root_owned_blob_dir_is_denied_and_resumable(shared_dir: Path) -> None:
    root = shared_dir / "store"
    store = LocalStore(root)
    (root / "blobs" / "sha256").mkdir()
    chown_tree(root, "nobody")
    os.chown(root / "blobs" / "sha256", 0, 0)  # only here may nobody not write
    data = content(300_000, seed=4)
    d = Digest.from_bytes(data)

    def child() -> tuple[str, int]:
        s = LocalStore(root)
        w = s.writer("perm", Descriptor(d, len(data)))
        w.write(data)
        try:
            w.commit(len(data), d)
        except errdefs.PermissionDenied as e:
            return str(e), s.status("perm").offset
        raise AssertionError("commit was allowed")

    msg, offset = run_in_child(child, user="nobody")
    assert msg.startswith("commit perm: Permission denied")
    assert offset == len(data)
    assert not store.exists(d)
    assert not (root / "meta" / "sha256" / f"{d.encoded}.json").exists()
    ingest = root / "ingest" / ref_key("perm")
    assert [p.name.split(".")[0] for p in ingest.iterdir() if "." in p.name] == ["sealed"]
    with store.writer("perm", Descriptor(d, len(data))) as w:
        assert w.status().offset == len(data)
        info = w.commit(len(data), d)
    assert read_blob(store, info.digest) == data


def test_nobody_can_read_but_not_delete_root_content(shared_dir: Path) -> None:
    root = shared_dir / "store"
    store = LocalStore(root)
    with store.writer("r") as w:
        w.write(b"readable")
        info = w.commit()

    def child() -> tuple[str, int, str]:
        s = LocalStore(root)
        got = read_blob(s, info.digest).decode()
        n = len(list(s.walk()))
        try:
            s.delete(info.digest)
        except errdefs.PermissionDenied as e:
            return got, n, str(e)
        raise AssertionError("delete was allowed")

    got, n, msg = run_in_child(child, user="nobody")
    assert (got, n) == ("readable", 1)
    assert "Permission denied" in msg
    assert store.exists(info.digest)
