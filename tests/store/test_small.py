"""The local store's small-blob path (``LocalStore.put``, ``write_blob`` for small known
sizes): what it leaves on disk, durability steps, SIGKILL at any point, and processes
racing for the same content. The protocol-level behaviour is in the contract."""

from __future__ import annotations

import errno
import io
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, Info, LocalStore, read_blob, write_blob
from ingestq.store.budget import Budget
from ingestq.store.gc import REQUESTED_LABEL, GcOptions, collect, requested_labels
from ingestq.store.local.blobs import META_XATTR
from ingestq.store.local.small import DEFAULT_SMALL_BLOB_MAX, SMALL_BLOB_ENV, small_blob_max
from tests.store import procs

CTX = mp.get_context("spawn")
WAIT = 60.0


def desc_of(data: bytes) -> Descriptor:
    return Descriptor(Digest.from_bytes(data), len(data))


def files(root: Path) -> set[str]:
    """Every file under ``root`` (relative paths), directories left out."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


#: What every store root holds from the start.
LAYOUT_FILES = {"oci-layout", "index.json"}


def _unsupported(*args: object, **kwargs: object) -> Any:
    """What the attribute calls answer where the mount keeps none (ramfs, NFS before
    4.2)."""
    raise OSError(errno.EOPNOTSUPP, "Operation not supported")


def _requested_blob(tmp_path: Path) -> tuple[LocalStore, Info]:
    """A store holding one small blob put with the producer's ``ingestq.expire-at``."""
    store = LocalStore(tmp_path / "s")
    data = os.urandom(100)
    return store, store.put("r", desc_of(data), data, requested_labels(None))


@pytest.mark.parametrize("unnamed", [True, False], ids=["o_tmpfile", "named-temp"])
def test_put_writes_only_the_blob(tmp_path: Path, unnamed: bool) -> None:
    store = LocalStore(tmp_path / "s")
    store.blobs.temp.unnamed = store.blobs.temp.unnamed and unnamed
    data = os.urandom(4096)
    info = write_blob(store, "r", io.BytesIO(data), desc_of(data))
    blob = store.blob_path(info.digest)
    assert files(store.root) == LAYOUT_FILES | {str(blob.relative_to(store.root))}
    st = blob.stat()
    assert st.st_mode & 0o777 == 0o444
    assert st.st_nlink == 1  # no temporary name still points at it
    # Without a metadata file, Info's times are the file's.
    assert info.created_at == info.updated_at == store.info(info.digest).created_at
    assert info.created_at.timestamp() == pytest.approx(st.st_mtime_ns / 1e9, abs=1e-5)
    assert read_blob(store, info.digest) == data


def test_put_with_labels_carries_them_in_the_blob_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    data = os.urandom(100)
    info = store.put("r", desc_of(data), data, {"a": "1"})
    blob = store.blob_path(info.digest)
    # No metadata file and no lock file: the labels are an attribute of the blob file,
    # set before its fsync, so they are durable and visible with it. The store's marker
    # says that its blobs carry such attributes.
    marker = str(store.layout.xattr_marker.relative_to(store.root))
    assert files(store.root) == LAYOUT_FILES | {str(blob.relative_to(store.root)), marker}
    assert b"rsync -aX" in store.layout.xattr_marker.read_bytes()
    assert list(store.layout.locks.iterdir()) == []
    assert json.loads(os.getxattr(blob, META_XATTR))["labels"] == {"a": "1"}
    assert blob.stat().st_mode & 0o777 == 0o444
    again = LocalStore(store.root).info(info.digest)
    assert dict(again.labels) == {"a": "1"}
    assert (again.created_at, again.updated_at) == (info.created_at, info.updated_at)


@pytest.fixture
def ramfs(tmp_path: Path) -> Iterator[Path]:
    """A ramfs mount: a real filesystem that keeps no extended attributes at all. Needs
    root (as CI has); elsewhere the attribute calls answer EOPNOTSUPP as ramfs would."""
    path = tmp_path / "ramfs"
    path.mkdir()
    if os.geteuid() != 0:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "setxattr", _unsupported)
            yield path
        return
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_put_with_labels_writes_a_metadata_file_where_files_carry_none(ramfs: Path) -> None:
    store = LocalStore(ramfs / "s")
    data = os.urandom(100)
    info = store.put("r", desc_of(data), data, {"a": "1"})
    assert not store.blobs.xattrs  # switched off at the first refusal
    assert store.layout.blob_meta(info.digest).is_file()
    assert not store.layout.xattr_marker.exists()
    assert list(store.layout.locks.iterdir()) == []
    assert dict(LocalStore(store.root).info(info.digest).labels) == {"a": "1"}
    other = os.urandom(100)
    again = store.put("r2", desc_of(other), other, requested_labels(None))
    assert store.layout.blob_meta(again.digest).is_file()
    # No marker: gc runs here, keeps the requested blob and removes the other.
    assert [d for d, _ in collect(store).blobs] == [str(info.digest)]
    assert store.blob_path(again.digest).exists()


def test_labels_too_large_for_the_blob_file_go_to_a_metadata_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    # Linux refuses attribute values over 64 KiB on every filesystem (E2BIG).
    labels = {f"k{i:02}": "v" * 4000 for i in range(20)}
    data = os.urandom(100)
    info = store.put("r", desc_of(data), data, labels)
    assert store.layout.blob_meta(info.digest).is_file()
    assert dict(LocalStore(store.root).info(info.digest).labels) == labels
    assert store.blobs.xattrs  # only this blob's labels went to the file
    other = os.urandom(100)
    small = store.put("r2", desc_of(other), other, {"a": "1"})
    assert not store.layout.blob_meta(small.digest).exists()


def _put_as_nobody(root: str, data: bytes, umask: int) -> tuple[bool, dict[str, str]]:
    if os.geteuid() == 0:
        os.setegid(65534)
        os.seteuid(65534)
    os.umask(umask)
    store = LocalStore(root)
    info = store.put("r", desc_of(data), data, {"a": "1"})
    return store.layout.blob_meta(info.digest).exists(), dict(store.info(info.digest).labels)


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory outside pytest's private temp tree (which only root may enter),
    owned by ``nobody`` when the tests run as root."""
    path = Path(tempfile.mkdtemp(prefix="ingestq-nobody-"))
    try:
        if os.geteuid() == 0:
            os.chown(path, 65534, 65534)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_an_unprivileged_owner_stores_labels_in_its_read_only_blob_files(
    nobody_dir: Path, umask: int
) -> None:
    # A user attribute needs write permission on the file, which a blob file (0444)
    # does not give its owner: put opens it up for the attribute, then closes it again.
    # The store's marker is read-only whatever the umask (others' gc must read it).
    root = nobody_dir / "s"
    with mp.get_context("fork").Pool(1) as pool:
        has_meta_file, labels = pool.apply(_put_as_nobody, (str(root), os.urandom(100), umask))
    assert labels == {"a": "1"}
    assert not has_meta_file
    (blob,) = (root / "blobs" / "sha256").iterdir()
    assert blob.stat().st_mode & 0o777 == 0o444
    assert (root / "meta" / "xattrs").stat().st_mode & 0o777 == 0o444
    assert blob.stat().st_uid == (65534 if os.geteuid() == 0 else os.geteuid())


def test_labels_carried_by_the_file_survive_relabelling_and_deletion(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    data = os.urandom(100)
    info = store.put("r", desc_of(data), data, {"a": "1", "b": "2"})
    patch = Info(info.digest, info.size, info.created_at, info.updated_at, {"c": "3"})
    updated = store.update(patch, "labels.c", "labels.b")
    assert dict(updated.labels) == {"a": "1", "c": "3"}
    assert updated.created_at == info.created_at
    assert store.layout.blob_meta(info.digest).is_file()  # the file wins from now on
    assert dict(LocalStore(store.root).info(info.digest).labels) == {"a": "1", "c": "3"}
    store.delete(info.digest)
    assert not store.layout.blob_meta(info.digest).exists()
    again = store.put("r", desc_of(data), data)
    assert dict(again.labels) == {}


def test_a_forged_attribute_gives_no_labels_and_no_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    data = os.urandom(100)
    info = store.put("r", desc_of(data), data)
    blob = store.blob_path(info.digest)
    for forged in (b"not json", b'{"labels": 5}', b"[]", b'{"created_at": "x"}'):
        blob.chmod(0o644)
        os.setxattr(blob, META_XATTR, forged)
        blob.chmod(0o444)
        got = store.info(info.digest)
        assert dict(got.labels) == {}
        assert got.created_at.timestamp() == pytest.approx(blob.stat().st_mtime_ns / 1e9, abs=1e-5)


def test_put_without_labels_keeps_labels_left_by_an_earlier_copy(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    data = os.urandom(100)
    first = store.put("r", desc_of(data), data)
    now = first.created_at
    store.update(Info(first.digest, first.size, now, now, {"a": "1"}), "labels.a")
    store.blob_path(first.digest).unlink()  # the file lost, its metadata file kept
    again = store.put("r", desc_of(data), data)
    assert dict(again.labels) == {"a": "1"} == dict(store.info(first.digest).labels)
    assert again.created_at >= first.created_at
    # Labels given now join them in the metadata file, which stays the one place.
    third = os.urandom(100)
    assert dict(store.put("t", desc_of(third), third, {"b": "2"}).labels) == {"b": "2"}
    store.blob_path(first.digest).unlink()
    merged = store.put("r", desc_of(data), data, {"b": "2"})
    assert dict(merged.labels) == {"a": "1", "b": "2"} == dict(store.info(first.digest).labels)


@pytest.mark.parametrize("labels", [{}, {"a": "1"}], ids=["unlabelled", "labelled"])
def test_a_damaged_blob_is_quarantined_and_put_again(
    tmp_path: Path, labels: dict[str, str]
) -> None:
    store = LocalStore(tmp_path / "s")
    data = os.urandom(4096)
    info = store.put("r", desc_of(data), data, labels)
    path = store.blob_path(info.digest)
    path.chmod(0o644)
    path.write_bytes(data[:100])
    again = write_blob(store, "r", io.BytesIO(data), desc_of(data))
    assert again.size == 4096
    assert read_blob(store, info.digest) == data
    assert len(list(store.layout.quarantine.iterdir())) == 1
    # The labels the damaged file carried stay for the new copy.
    assert dict(again.labels) == labels == dict(store.info(info.digest).labels)


def test_the_threshold_comes_from_the_environment(tmp_path: Path) -> None:
    assert small_blob_max({}) == DEFAULT_SMALL_BLOB_MAX == 1 << 20
    assert small_blob_max({SMALL_BLOB_ENV: "64K"}) == 65536
    with pytest.raises(errdefs.InvalidArgument):
        small_blob_max({SMALL_BLOB_ENV: "lots"})
    # 0 turns the path off: write_blob goes through a writer, which writes metadata.
    store = LocalStore(tmp_path / "s", small_blob_max=0)
    data = os.urandom(4096)
    info = write_blob(store, "r", io.BytesIO(data), desc_of(data))
    assert store.layout.blob_meta(info.digest).is_file()
    small = LocalStore(tmp_path / "t", small_blob_max=4096)
    info = write_blob(small, "r", io.BytesIO(data), desc_of(data))
    assert not small.layout.blob_meta(info.digest).exists()


def test_put_above_the_threshold_is_a_resumable_ingest(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s", small_blob_max=1000)
    data = os.urandom(4096)

    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            self.pos = 0

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            if self.pos >= 2048:
                raise errdefs.Unavailable("source dropped")
            n = min(len(b), 2048 - self.pos)
            b[:n] = data[self.pos : self.pos + n]
            self.pos += n
            return n

    with pytest.raises(errdefs.Unavailable):
        write_blob(store, "big", Failing(), desc_of(data))
    assert store.status("big").offset == 2048
    info = store.put("big", desc_of(data), data)
    assert read_blob(store, info.digest) == data
    assert store.list_statuses() == []


def test_put_respects_the_budget(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s", budget=Budget(max_bytes=6000))
    first = os.urandom(4096)
    store.put("a", desc_of(first), first)
    second = os.urandom(4096)
    with pytest.raises(errdefs.ResourceExhausted):
        store.put("b", desc_of(second), second)
    with pytest.raises(errdefs.NotFound):
        store.info(Digest.from_bytes(second))


@pytest.mark.parametrize("unnamed", [True, False], ids=["o_tmpfile", "named-temp"])
def test_sigkill_during_puts_leaves_only_sound_blobs(tmp_path: Path, unnamed: bool) -> None:
    root = tmp_path / "store"
    reported: set[str] = set()
    for round_ in range(3):
        parent_end, child_end = CTX.Pipe()
        p = CTX.Process(target=procs.put_until_killed, args=(str(root), round_, unnamed, child_end))
        p.start()
        assert parent_end.poll(WAIT)
        assert parent_end.recv() == ("ready", p.pid)
        seen = 0
        while seen < 40:  # well into the loop; the kill lands inside some put
            assert parent_end.poll(WAIT)
            kind, digest = parent_end.recv()
            assert kind == "put"
            reported.add(digest)
            seen += 1
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
        p.join(WAIT)
        assert p.exitcode == -signal.SIGKILL
        while parent_end.poll(0):  # puts that finished before the kill landed
            reported.add(parent_end.recv()[1])
    store = LocalStore(root)
    blob_dir = store.layout.blob_dir("sha256")
    names = os.listdir(blob_dir)
    committed = {f"sha256:{n}" for n in names if not n.startswith(".")}
    assert reported <= committed
    for digest in committed:
        store.verify(digest)  # DataLoss if any published blob were torn
    # Nothing else: no ingest directories, and no temporary file unless it had a name.
    assert os.listdir(store.layout.ingest) == []
    leftovers = [n for n in names if n.startswith(".")]
    if unnamed:
        assert leftovers == []
    else:
        assert all(n.endswith(".tmp") for n in leftovers) and len(leftovers) <= 3
    # Every blob can still be put or found (no lock is left stuck by a killed holder).
    for digest in committed:
        data = read_blob(store, digest)
        with pytest.raises(errdefs.AlreadyExists):
            store.put("again", desc_of(data), data)
    assert store.list_statuses() == []


def test_processes_racing_to_put_the_same_blobs_commit_each_once(tmp_path: Path) -> None:
    root, n, count = str(tmp_path / "store"), 3, 60
    start = CTX.Barrier(n)
    out: Any = CTX.Queue()
    ps = [CTX.Process(target=procs.race_puts, args=(root, count, start, out)) for _ in range(n)]
    for p in ps:
        p.start()
    results = [out.get(timeout=WAIT) for _ in ps]
    for p in ps:
        p.join(WAIT)
        assert p.exitcode == 0
    by_digest: dict[str, list[str]] = {}
    for _, rs in results:
        for digest, outcome in rs:
            by_digest.setdefault(digest, []).append(outcome)
    assert len(by_digest) == count
    for outcomes in by_digest.values():
        assert sorted(outcomes) == ["already_exists"] * (n - 1) + ["committed"]
    store = LocalStore(root)
    for digest in by_digest:
        store.verify(digest)
    assert files(store.root) == LAYOUT_FILES | {
        f"blobs/sha256/{d.split(':')[1]}" for d in by_digest
    }


def _commit_and_die(root: str, data: bytes, how: str) -> None:
    """In a forked child: commit ``data`` on another ref and SIGKILL this process right
    after it writes a metadata file, before its link. ``how``: a writer's publish; a put
    whose labels are too large for an attribute; a labelled put of a blob that exists
    (which must end with AlreadyExists before writing any)."""
    store = LocalStore(root)
    write_meta = store.blobs._write_meta

    def then_die(digest: Digest, meta: Any) -> None:
        write_meta(digest, meta)
        os.kill(os.getpid(), signal.SIGKILL)

    store.blobs._write_meta = then_die  # type: ignore[method-assign]
    if how == "publish":
        with store.writer("w-ref", desc_of(data)) as w:
            w.write(data)
            w.commit(len(data), Digest.from_bytes(data), {"src": "publisher"})
    elif how == "put":
        store.put("w-ref", desc_of(data), data, {f"k{i:02}": "v" * 4000 for i in range(20)})
    else:
        with pytest.raises(errdefs.AlreadyExists):
            store.blobs.put(Digest.from_bytes(data), data, {"late": "1"})


@pytest.mark.parametrize("how", ["publish", "put"])
def test_a_committer_killed_beside_a_labelled_put_hides_none_of_its_labels(
    tmp_path: Path, how: str
) -> None:
    # The put has set its attribute and is about to link when another committer of the
    # same digest writes its metadata file and is killed: that file stays, and must not
    # hide the labels of the put, which returns success.
    store = LocalStore(tmp_path / "s")
    data = os.urandom(300)
    link = store.blobs.temp.link

    def link_after_a_killed_committer(fd: int, tmp: Path | None, target: Path) -> None:
        child = mp.get_context("fork").Process(
            target=_commit_and_die, args=(str(store.root), data, how)
        )
        child.start()
        child.join(WAIT)
        assert child.exitcode == -signal.SIGKILL
        assert store.layout.blob_meta(Digest.from_bytes(data)).is_file()
        link(fd, tmp, target)

    store.blobs.temp.link = link_after_a_killed_committer  # type: ignore[method-assign]
    info = store.put("p-ref", desc_of(data), data, requested_labels(None))
    assert dict(info.labels) == requested_labels(None)
    seen = dict(LocalStore(store.root).info(info.digest).labels)
    assert seen[REQUESTED_LABEL] == "never"  # and the killed committer's labels stay too
    assert ("src" in seen) == (how == "publish")
    report = collect(LocalStore(store.root), GcOptions(ingest_max_age=timedelta(0)))
    assert str(info.digest) not in {d for d, _ in report.blobs}
    assert store.blob_path(info.digest).exists()


def test_a_publish_that_loses_the_link_to_a_small_put_is_already_exists(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    putter = LocalStore(store.root)
    data = os.urandom(300)
    writer = store.writer("w", desc_of(data))
    writer.write(data)
    link, write_meta = putter.blobs.temp.link, store.blobs._write_meta
    outcome: list[BaseException] = []

    def commit_before_the_link(fd: int, tmp: Path | None, target: Path) -> None:
        # The put has checked for a metadata file and set its attribute; the writer's
        # publish now takes the blob lock, finds no blob, writes its metadata file, and
        # the put (which takes no lock) links before publish does.
        def then_the_put_links(digest: Digest, meta: Any) -> None:
            write_meta(digest, meta)
            link(fd, tmp, target)
            # Meanwhile the publisher's file does not hide the put's labels.
            assert dict(putter.info(digest).labels) == {"p": "1", "w": "1"}

        store.blobs._write_meta = then_the_put_links  # type: ignore[method-assign]
        try:
            writer.commit(len(data), Digest.from_bytes(data), {"w": "1"})
        except errdefs.ErrdefsError as e:
            outcome.append(e)

    putter.blobs.temp.link = commit_before_the_link  # type: ignore[method-assign]
    info = putter.put("p", desc_of(data), data, {"p": "1"})
    assert [type(e) for e in outcome] == [errdefs.AlreadyExists]
    assert not store.layout.ingest_dir("w").exists()
    assert store.list_statuses() == []
    assert not store.layout.blob_meta(info.digest).exists()  # publish put back what was
    assert dict(store.info(info.digest).labels) == {"p": "1"}


def test_a_host_that_cannot_read_attributes_refuses_to_relabel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, info = _requested_blob(tmp_path)
    monkeypatch.setattr(os, "getxattr", _unsupported)
    patch = Info(info.digest, info.size, info.created_at, info.updated_at, {"x": "1"})
    for act in (lambda: store.info(info.digest), lambda: store.update(patch, "labels.x")):
        with pytest.raises(errdefs.FailedPrecondition, match="cannot read back"):
            act()
    monkeypatch.undo()
    assert dict(store.info(info.digest).labels) == requested_labels(None)
    assert not store.layout.blob_meta(info.digest).exists()


def test_the_marker_is_read_only_whatever_the_umask_and_a_copy_without_attributes_fails_gc(
    tmp_path: Path,
) -> None:
    old = os.umask(0o077)
    try:
        store = LocalStore(tmp_path / "s")
        data = os.urandom(100)
        info = store.put("r", desc_of(data), data, requested_labels(None))
    finally:
        os.umask(old)
    marker = store.layout.xattr_marker
    assert marker.stat().st_mode & 0o777 == 0o444
    assert os.getxattr(marker, META_XATTR)  # gc reads it back
    assert [d for d, _ in collect(store).blobs] == []
    # cp -r keeps no extended attributes: the copy has the marker, not its value.
    subprocess.run(["cp", "-r", str(store.root), str(tmp_path / "copy")], check=True)
    copy = LocalStore(tmp_path / "copy")
    assert dict(copy.info(info.digest).labels) == {}
    with pytest.raises(errdefs.FailedPrecondition, match=r"cp -a, rsync -aX"):
        collect(copy)
    assert copy.blob_path(info.digest).exists()
    # A labelled put into the copy does not repair the marker: gc keeps refusing.
    more = os.urandom(100)
    copy.put("m", desc_of(more), more, {"a": "1"})
    with pytest.raises(errdefs.FailedPrecondition):
        collect(copy)


def test_labels_that_cannot_be_read_stop_gc_instead_of_counting_as_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, info = _requested_blob(tmp_path)
    getxattr = os.getxattr

    def damaged(path: Any, name: str, **kwargs: Any) -> bytes:
        if str(path).endswith(info.digest.encoded):  # a damaged attribute block
            raise OSError(errno.EIO, "Input/output error")
        return getxattr(path, name, **kwargs)

    monkeypatch.setattr(os, "getxattr", damaged)
    with pytest.raises(errdefs.DataLoss):
        store.info(info.digest)
    with pytest.raises(errdefs.DataLoss):
        collect(store)
    monkeypatch.undo()
    assert store.blob_path(info.digest).exists()


def test_a_publish_on_a_host_that_cannot_read_attributes_reports_what_it_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "s")
    first = os.urandom(100)
    store.put("r", desc_of(first), first, {"a": "1"})  # the store now holds attributes

    monkeypatch.setattr(os, "getxattr", _unsupported)
    data = os.urandom(2000)
    with store.writer("w", desc_of(data)) as w:
        w.write(data)
        info = w.commit(len(data), Digest.from_bytes(data), {"b": "2"})
    assert dict(info.labels) == {"b": "2"} and info.size == 2000
    monkeypatch.undo()
    assert dict(store.info(info.digest).labels) == {"b": "2"}


def test_a_labelled_put_over_an_existing_blob_writes_no_metadata_beside_it(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "s")
    data = os.urandom(100)
    info = store.put("r", desc_of(data), data, {"keep": "1", "drop": "1"})
    patch = Info(info.digest, info.size, info.created_at, info.updated_at, {})
    store.update(patch, "labels.drop")
    written = store.layout.blob_meta(info.digest).read_bytes()
    # A put that found no blob (its check raced another put's link) reaches the blob's
    # own commit, and is killed as soon as it writes metadata: it must write none, or
    # its file would merge the dropped label back from the attribute.
    child = mp.get_context("fork").Process(
        target=_commit_and_die, args=(str(store.root), data, "existing")
    )
    child.start()
    child.join(WAIT)
    assert child.exitcode == 0  # AlreadyExists, before any metadata
    assert store.layout.blob_meta(info.digest).read_bytes() == written
    assert dict(store.info(info.digest).labels) == {"keep": "1"}


def test_a_metadata_file_with_naive_times_reads_as_utc(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    data = os.urandom(100)
    info = store.put("r", desc_of(data), data, {"a": "1"})
    naive = {"created_at": "2026-01-02T03:04:05", "updated_at": "2026-01-02T03:04:05"}
    path = store.layout.blob_meta(info.digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**naive, "labels": {"b": "2"}}))
    got = store.info(info.digest)
    assert dict(got.labels) == {"a": "1", "b": "2"}  # not the attribute's own: merged
    assert got.created_at == info.created_at


def test_a_metadata_file_that_cannot_be_read_stops_gc_instead_of_counting_as_none(
    tmp_path: Path,
) -> None:
    store, info = _requested_blob(tmp_path)
    store.layout.blob_meta(info.digest).mkdir(parents=True)  # forged: a directory
    with pytest.raises(errdefs.DataLoss, match="not a metadata file"):
        store.info(info.digest)
    with pytest.raises(errdefs.DataLoss):
        collect(store)
    assert store.blob_path(info.digest).exists()
