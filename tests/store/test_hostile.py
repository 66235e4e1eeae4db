"""Hostile input: malformed digests (with go-digest's messages), refs that try to escape
the root or break paths, oversize refs and labels, wrong commits, and content tampered
with on disk. Afterwards nothing may exist outside the store root."""

from __future__ import annotations

import errno
import functools
import gc
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, Info, LocalStore, read_blob
from ingestq.store.gc import GcOptions, collect
from ingestq.store.local import blobs as blobs_module
from ingestq.store.local.ingest import SMALL_FILE_MAX, IngestDir
from ingestq.store.locks import ref_key
from ingestq.store.ownfiles import open_own, remove_tree
from tests.servers.util import bounded
from tests.store.test_disk_errors import chown_tree, run_in_child

HEX64 = "a" * 64


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Path]:
    """A directory holding only the store root; checked afterwards for escapes."""
    box = tmp_path / "box"
    box.mkdir()
    yield box
    assert [p.name for p in box.iterdir()] == ["store"], "something escaped the root"
    root = (box / "store").resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            assert not p.is_symlink(), p
            assert p.resolve().is_relative_to(root), p


@pytest.fixture
def store(sandbox: Path) -> LocalStore:
    return LocalStore(sandbox / "store", fsync=False)


def ingest(store: LocalStore, data: bytes, ref: str = "ref", **labels: str) -> Info:
    with store.writer(ref, Descriptor(Digest.from_bytes(data), len(data))) as w:
        w.write(data)
        return w.commit(len(data), Digest.from_bytes(data), labels or None)


def resume_and_commit(store: LocalStore, ref: str, offset: int, data: bytes) -> None:
    """Reopen ``ref``, check that it resumes at ``offset``, write the rest of ``data``,
    commit it and read it back."""
    with store.writer(ref) as w:
        assert w.status().offset == offset
        w.write(data[offset:])
        info = w.commit(len(data))
    assert read_blob(store, info.digest) == data


# digests -----------------------------------------------------------------------------
BAD_DIGESTS = [
    ("", "invalid checksum digest format"),
    ("sha256", "invalid checksum digest format"),
    (":" + HEX64, "invalid checksum digest format"),
    ("sha256:", "invalid checksum digest format"),
    ("SHA256:" + HEX64, "invalid checksum digest format"),
    ("sha256:" + "A" * 64, "invalid checksum digest format"),
    ("sha256:" + "g" * 64, "invalid checksum digest format"),
    ("sha256:" + HEX64[:-1] + "\x00", "invalid checksum digest format"),
    ("sha256:abc", "invalid checksum digest length"),
    ("sha256:" + HEX64 + "\n", "invalid checksum digest length"),
    ("sha512:" + HEX64, "invalid checksum digest length"),
    ("sha384:" + "a" * 128, "invalid checksum digest length"),
    ("md5:" + "a" * 32, "unsupported digest algorithm"),
    ("sha256+b64:abc", "unsupported digest algorithm"),
    ("sha256:../../../etc/passwd", "invalid checksum digest length"),
    ("sha256:" + ("../" * 22)[:60] + "etc/", "invalid checksum digest format"),
    ("../sha256:" + HEX64, "invalid checksum digest format"),
]


@pytest.mark.parametrize(("text", "why"), BAD_DIGESTS)
def test_malformed_digests_are_invalid_argument_everywhere(
    store: LocalStore, text: str, why: str
) -> None:
    with pytest.raises(errdefs.InvalidArgument) as exc:
        Digest.parse(text)
    assert str(exc.value) == f"{text!r}: {why}: invalid argument"
    for op in (store.info, store.reader_at, store.delete, store.exists, store.verify):
        with pytest.raises(errdefs.InvalidArgument):
            op(text)


def test_non_string_digest_is_invalid_argument() -> None:
    with pytest.raises(errdefs.InvalidArgument):
        Digest.parse(42)  # type: ignore[arg-type]


def test_digest_fields_are_validated_on_construction() -> None:
    with pytest.raises(errdefs.InvalidArgument):
        Digest("sha256", "../" + "a" * 61)
    with pytest.raises(errdefs.InvalidArgument):
        Digest("sha1", "a" * 40)


# refs --------------------------------------------------------------------------------
ESCAPING_REFS = ["../../../etc/passwd", "/etc/passwd", "a/../../b", "..", ".", "x/" * 200, "ü/日本"]


@pytest.mark.parametrize("ref", ESCAPING_REFS)
def test_refs_with_path_syntax_stay_inside_the_root(store: LocalStore, ref: str) -> None:
    data = ref.encode() * 3
    w = store.writer(ref)
    w.write(data)
    w.close()
    st = store.status(ref)
    assert (st.ref, st.offset) == (ref, len(data))
    assert (store.root / "ingest" / ref_key(ref) / "ref").read_text() == ref
    assert [s.ref for s in store.list_statuses()] == [ref]
    with store.writer(ref) as w:
        info = w.commit(len(data), Digest.from_bytes(data))
    assert read_blob(store, info.digest) == data
    store.writer(ref).close()
    store.abort(ref)


BAD_REFS = [
    ("", "ref must not be empty"),
    ("a\x00b", "control characters"),
    ("line\nbreak", "control characters"),
    ("tab\there", "control characters"),
    ("del\x7f", "control characters"),
    ("x" * 10 * 1024, "longer than 4096"),
    ("é" * 2049, "longer than 4096"),  # 4098 bytes in UTF-8
    ("bad\udcffsurrogate", "not valid UTF-8"),
]


@pytest.mark.parametrize(("ref", "why"), BAD_REFS)
def test_bad_refs_are_invalid_argument(store: LocalStore, ref: str, why: str) -> None:
    for op in (store.writer, store.status, store.abort):
        with pytest.raises(errdefs.InvalidArgument) as exc:
            op(ref)
        assert why in str(exc.value)
    assert list((store.root / "ingest").iterdir()) == []


def test_a_4096_byte_ref_is_fine(store: LocalStore) -> None:
    ref = "r" * 4096
    with store.writer(ref) as w:
        w.write(b"long ref")
        assert store.status(ref).offset == 8


def test_filters_cannot_be_used_to_inject(store: LocalStore) -> None:
    ingest(store, b"content", "ref", a="1")
    for bad in ("labels.a==1,", "labels.a==1 x", "ref~=(", 'labels."unterminated', "\x00"):
        with pytest.raises(errdefs.InvalidArgument):
            store.walk(bad)
        with pytest.raises(errdefs.InvalidArgument):
            store.list_statuses(bad)


# labels ------------------------------------------------------------------------------
def test_oversize_labels_are_refused(store: LocalStore) -> None:
    info = ingest(store, b"labelled")
    for labels in ({"k": "v" * 4096}, {"k" * 4096: "v"}, {"ключ": "з" * 2047}):
        with pytest.raises(errdefs.InvalidArgument) as exc:
            store.update(Info(info.digest, 0, info.created_at, info.updated_at, labels))
        assert "greater than maximum size (4096 bytes)" in str(exc.value)
    assert dict(store.info(info.digest).labels) == {}


def test_label_key_must_not_be_empty(store: LocalStore) -> None:
    info = ingest(store, b"labelled")
    with pytest.raises(errdefs.InvalidArgument):
        store.update(Info(info.digest, 0, info.created_at, info.updated_at, {"": "v"}))


# commits -----------------------------------------------------------------------------
def test_wrong_commits_publish_nothing(store: LocalStore) -> None:
    data = b"the real content"
    w = store.writer("wrong")
    w.write(data)
    with pytest.raises(errdefs.FailedPrecondition):
        w.commit(len(data) - 1)
    w = store.writer("wrong")
    with pytest.raises(errdefs.FailedPrecondition):
        w.commit(len(data), Digest.from_bytes(b"other content"))
    w = store.writer("wrong")
    with pytest.raises(errdefs.FailedPrecondition):
        w.commit(len(data), Digest.from_bytes(data + b"x", "sha512"))
    assert list(store.walk()) == []
    assert [p for p in (store.root / "blobs").rglob("*") if p.is_file()] == []
    with store.writer("wrong") as w:
        assert w.commit(len(data), Digest.from_bytes(data)).size == len(data)


# content tampered with on disk ----------------------------------------------------------
def tamper(path: Path, data: bytes) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(data)


def test_read_blob_and_verify_detect_same_size_tampering(store: LocalStore) -> None:
    data = b"precious manifest bytes"
    info = ingest(store, data)
    tamper(store.blob_path(info.digest), b"X" * len(data))
    with pytest.raises(errdefs.DataLoss):
        read_blob(store, info.digest)
    with pytest.raises(errdefs.DataLoss):
        store.verify(info.digest)


def test_a_truncated_blob_is_quarantined_and_ingested_again(store: LocalStore) -> None:
    data = os.urandom(100_000)
    info = ingest(store, data, "first", keep="me")
    tamper(store.blob_path(info.digest), data[:1000])
    with pytest.raises(errdefs.DataLoss):
        read_blob(store, Descriptor(info.digest, len(data)))
    # A writer that knows the size does not trust the damaged copy.
    again = ingest(store, data, "second")
    assert read_blob(store, info.digest) == data
    assert dict(again.labels) == {"keep": "me"}  # labels survive the repair
    quarantined = list((store.root / "quarantine").iterdir())
    assert len(quarantined) == 1
    assert quarantined[0].read_bytes() == data[:1000]


def test_a_commit_replaces_a_blob_of_the_wrong_size(store: LocalStore) -> None:
    data = os.urandom(50_000)
    d = Digest.from_bytes(data)
    info = ingest(store, data)
    tamper(store.blob_path(d), data + b"junk")
    with store.writer("no-expectation") as w:  # nothing tells the writer the size
        w.write(data)
        repaired = w.commit()
    assert repaired.digest == info.digest
    assert read_blob(store, d) == data


def test_a_damaged_blob_of_the_right_size_is_kept_when_the_caller_is_wrong(
    store: LocalStore,
) -> None:
    data = os.urandom(1000)
    info = ingest(store, data)
    with pytest.raises(errdefs.AlreadyExists):  # intact: the caller's size was wrong
        store.writer("x", Descriptor(info.digest, 999))
    assert not (store.root / "quarantine").exists()


def test_junk_under_blobs_and_broken_metadata(store: LocalStore) -> None:
    info = ingest(store, b"real", a="1")
    (store.root / "blobs" / "sha256" / "not-a-digest").write_bytes(b"junk")
    (store.root / "blobs" / "sha256" / ("A" * 64)).write_bytes(b"junk")
    (store.root / "blobs" / "md5").mkdir()
    (store.root / "blobs" / "md5" / ("a" * 32)).write_bytes(b"junk")
    assert [i.digest for i in store.walk()] == [info.digest]
    meta = store.root / "meta" / "sha256" / f"{info.digest.encoded}.json"
    meta.write_text("{not json")
    assert dict(store.info(info.digest).labels) == {}
    fixed = store.update(Info(info.digest, 0, info.created_at, info.updated_at, {"b": "2"}))
    assert dict(fixed.labels) == {"b": "2"}
    for junk in ("not-a-digest", "A" * 64):
        (store.root / "blobs" / "sha256" / junk).unlink()
    (store.root / "blobs" / "md5" / ("a" * 32)).unlink()


def test_damaged_ingest_files_are_tolerated(store: LocalStore) -> None:
    w = store.writer("damaged")
    w.write(b"0123456789")
    w.close()
    d = store.root / "ingest" / ref_key("damaged")
    (d / "total").write_text("not a number")
    (d / "startedat").write_text("yesterday")
    (d / "expected").write_text("sha256:nope")
    (d / "current").write_text("../../../../etc/passwd")
    st = store.status("damaged")
    assert (st.offset, st.total, st.expected) == (10, 0, None)
    resume_and_commit(store, "damaged", 10, b"0123456789!")


def test_an_incomplete_ingest_directory_starts_over(store: LocalStore) -> None:
    d = store.root / "ingest" / ref_key("half")
    d.mkdir()
    (d / f"data.{'0' * 32}").write_bytes(b"stale bytes from a crash before ref was written")
    with pytest.raises(errdefs.NotFound):
        store.status("half")
    resume_and_commit(store, "half", 0, b"fresh")


# files planted in an ingest directory ------------------------------------------------
def closed_ingest(store: LocalStore, ref: str, data: bytes) -> Path:
    """Write ``data`` under ``ref``, close the writer (its file sealed); the directory."""
    with store.writer(ref) as w:
        w.write(data)
    return store.root / "ingest" / ref_key(ref)


@pytest.mark.parametrize("prefix", ["sealed.", "data."])
def test_a_symlink_in_place_of_the_data_file_is_never_written_or_read_through(
    store: LocalStore, tmp_path: Path, prefix: str
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"secret bytes outside the store")
    d = closed_ingest(store, "planted", b"abc")
    (sealed,) = d.glob("sealed.*")
    sealed.unlink()
    (d / f"{prefix}{sealed.name.split('.', 1)[1]}").symlink_to(victim)
    assert store.status("planted").offset == 0
    resume_and_commit(store, "planted", 0, b"fresh")  # nothing of the victim adopted
    assert victim.read_bytes() == b"secret bytes outside the store"


@pytest.mark.parametrize("prefix", ["sealed.", "data."])
def test_a_fifo_in_place_of_the_data_file_blocks_nothing(store: LocalStore, prefix: str) -> None:
    d = closed_ingest(store, "fifo", b"abc")
    (sealed,) = d.glob("sealed.*")
    sealed.unlink()
    os.mkfifo(d / f"{prefix}{sealed.name.split('.', 1)[1]}")
    assert bounded(lambda: store.status("fifo")) is None
    statuses: list[int] = []

    def resume() -> None:
        with store.writer("fifo") as w:
            statuses.append(w.status().offset)
            w.write(b"x")
            w.commit(1)

    assert bounded(resume) is None
    assert statuses == [0]


@pytest.mark.parametrize("name", ["ref", "current", "total", "startedat", "expected"])
def test_planted_metadata_files_block_nothing_and_read_nothing_outside(
    store: LocalStore, name: str
) -> None:
    d = closed_ingest(store, "meta", b"abc")
    (d / name).unlink(missing_ok=True)
    os.mkfifo(d / name)

    def status_outcome() -> type[BaseException] | None:
        outcome = bounded(lambda: store.status("meta"))
        return None if outcome is None else type(outcome)

    # Without its ref an ingest is incomplete (NotFound); any other file reads as absent.
    expected = errdefs.NotFound if name == "ref" else None
    assert status_outcome() is expected
    (d / name).unlink()
    (d / name).symlink_to("/dev/zero")  # read through, it would never end
    assert status_outcome() is expected
    offsets: list[int] = []

    def resume() -> None:
        with store.writer("meta") as w:
            offsets.append(w.status().offset)
            w.write(b"abcdef"[offsets[0] :])
            w.commit(6)

    assert bounded(resume) is None
    assert offsets == [0 if name == "ref" else 3]  # without its ref an ingest starts over
    assert read_blob(store, Digest.from_bytes(b"abcdef")) == b"abcdef"


def test_an_oversize_metadata_file_reads_as_damaged(store: LocalStore) -> None:
    d = closed_ingest(store, "big", b"abc")
    (d / "total").write_text("7" + " " * SMALL_FILE_MAX)  # "7" if read whole
    assert store.status("big").total == 0


def test_an_empty_ref_file_as_a_power_cut_leaves_it_starts_over(store: LocalStore) -> None:
    # ``ref`` is written without fsync: after a power cut it can be there but empty.
    d = closed_ingest(store, "cut", b"abc")
    (d / "ref").write_bytes(b"")
    with pytest.raises(errdefs.NotFound):
        store.status("cut")
    resume_and_commit(store, "cut", 0, b"whole")


def test_own_files_open_only_as_regular_files(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError) as e:
        open_own(tmp_path / "link", os.O_RDONLY)
    assert e.value.errno == errno.ELOOP
    for flags in (os.O_RDONLY, os.O_RDWR):  # O_RDONLY is the one that waits for a writer
        outcome = bounded(functools.partial(open_own, tmp_path / "fifo", flags))
        assert isinstance(outcome, OSError) and outcome.errno == errno.EINVAL
    fd = open_own(tmp_path / "file", os.O_RDONLY)
    try:
        assert os.get_blocking(fd)
        assert os.read(fd, 10) == b"x"
    finally:
        os.close(fd)


def test_a_zero_filled_or_foreign_ref_file_starts_the_ingest_over(store: LocalStore) -> None:
    d = closed_ingest(store, "zeros", b"abc")
    (d / "ref").write_bytes(b"\0" * 5)  # what some filesystems leave after a power cut
    with pytest.raises(errdefs.NotFound):
        store.status("zeros")
    assert "\0" not in "".join(st.ref for st in store.list_statuses())
    (d / "ref").write_text("another-ref")  # names another directory: not this ingest's
    with pytest.raises(errdefs.NotFound):
        store.status("zeros")
    assert [st.ref for st in store.list_statuses()] == []
    info = ingest(store, b"whole", "zeros")
    assert read_blob(store, info.digest) == b"whole"


def test_a_symlinked_ingest_directory_is_not_read_through(
    store: LocalStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "ref").write_text("linked")
    (outside / f"data.{'1' * 32}").write_bytes(b"outside bytes")
    d = store.root / "ingest" / ref_key("linked")
    d.parent.mkdir(parents=True, exist_ok=True)
    d.symlink_to(outside)
    with pytest.raises(errdefs.NotFound):
        store.status("linked")
    assert store.list_statuses() == []
    info = ingest(store, b"inside", "linked")  # the symlink is replaced by a real directory
    assert read_blob(store, info.digest) == b"inside"
    assert sorted(p.name for p in outside.iterdir()) == ["data." + "1" * 32, "ref"]
    assert (outside / f"data.{'1' * 32}").read_bytes() == b"outside bytes"


def _swap_for_symlink(d: Path, moved: Path, target: Path) -> None:
    """What an attacker who can write in ``ingest/`` does between a writer's check and
    its writes: rename the ingest directory away, put a symlink in its place."""
    d.rename(moved)
    d.symlink_to(target)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A directory outside the store holding files named like an ingest's."""
    path = tmp_path / "victim"
    path.mkdir()
    for name in VICTIM_FILES:
        (path / name).write_text(f"precious {name}")
    return path


VICTIM_FILES = sorted(["ref", "current", "total", "startedat", "expected",
                       f"data.{'1' * 32}", f"sealed.{'2' * 32}"])  # fmt: skip


def _untouched(victim: Path) -> None:
    assert sorted(p.name for p in victim.iterdir()) == VICTIM_FILES
    for p in victim.iterdir():
        assert p.read_text() == f"precious {p.name}"


@pytest.mark.parametrize("end", ["commit", "close"])
@pytest.mark.parametrize("when", ["begin", "set_current"])
def test_an_ingest_directory_swapped_for_a_symlink_is_never_written_through(
    store: LocalStore,
    tmp_path: Path,
    victim: Path,
    monkeypatch: pytest.MonkeyPatch,
    when: str,
    end: str,
) -> None:
    data = b"0123456789" * 1000
    ref = f"swapped-{when}-{end}"
    d = store.root / "ingest" / ref_key(ref)
    moved = tmp_path / "moved"
    desc = Descriptor(Digest.from_bytes(data), len(data))
    if when == "set_current":  # a resume: the directory exists and holds a prefix
        with store.writer(ref, desc) as w:
            w.write(data[:4000])
    original = getattr(IngestDir, when)

    def swap_then(self: IngestDir, *args: object) -> None:
        if not moved.exists():
            _swap_for_symlink(d, moved, victim)
        original(self, *args)

    monkeypatch.setattr(IngestDir, when, swap_then)
    w = store.writer(ref, desc)
    monkeypatch.undo()
    assert moved.exists(), "the swap ran"
    w.write(data[w.status().offset :])
    if end == "commit":
        info = w.commit(len(data), Digest.from_bytes(data))
        assert read_blob(store, info.digest) == data
        assert store.blob_path(info.digest).stat().st_nlink == 1
        # The commit emptied the directory it held, and left the name (not it) alone.
        assert list(moved.iterdir()) == []
    else:
        w.close()
        # The writer kept to the directory it checked, wherever that was moved.
        assert (moved / "ref").read_text() == ref
        assert [p.name.split(".")[0] for p in moved.glob("*.*")] == ["sealed"]
        assert sum(p.stat().st_size for p in moved.glob("sealed.*")) == len(data)
    assert d.is_symlink()
    d.unlink()  # the attacker's (the sandbox allows none)
    _untouched(victim)


def test_a_commit_leaves_a_directory_put_at_the_ingests_name_alone(
    store: LocalStore, tmp_path: Path
) -> None:
    data = b"committed while its directory was renamed away"
    w = store.writer("renamed", Descriptor(Digest.from_bytes(data), len(data)))
    w.write(data)
    d = store.root / "ingest" / ref_key("renamed")
    d.rename(tmp_path / "moved")
    d.mkdir()  # someone else's, at the same name
    (d / "theirs").write_text("kept")
    info = w.commit(len(data), Digest.from_bytes(data))
    assert read_blob(store, info.digest) == data
    assert (d / "theirs").read_text() == "kept"
    assert list((tmp_path / "moved").iterdir()) == []
    remove_tree(d)


def test_without_proc_a_writer_reaches_its_files_by_name(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_stat = os.stat

    def no_proc(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if str(path).startswith("/proc/self/fd/"):
            raise FileNotFoundError(errno.ENOENT, "no /proc", str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", no_proc)
    data = b"resumed by name" * 100
    desc = Descriptor(Digest.from_bytes(data), len(data))
    with store.writer("by-name", desc) as w:
        assert w._ingest.through is None  # what the fallback chose
        w.write(data[:500])
    with store.writer("by-name", desc) as w:
        assert w.status().offset == 500
        w.write(data[500:])
        info = w.commit(len(data), desc.digest)
    assert read_blob(store, info.digest) == data
    assert not (store.root / "ingest" / ref_key("by-name")).exists()


def test_an_ingest_directory_swapped_right_after_it_was_made_is_made_again(
    store: LocalStore, tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = store.root / "ingest" / ref_key("remade")
    moved = tmp_path / "moved"
    original = IngestDir.create

    def create_then_swap(self: IngestDir) -> bool:
        created = original(self)
        if not moved.exists():
            _swap_for_symlink(d, moved, victim)
        return created

    monkeypatch.setattr(IngestDir, "create", create_then_swap)
    info = ingest(store, b"made again", "remade")
    assert read_blob(store, info.digest) == b"made again"
    assert moved.exists(), "the swap ran"
    assert not d.exists() and not d.is_symlink()
    _untouched(victim)


def test_a_file_planted_under_the_data_name_is_never_published(
    store: LocalStore, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"not the content")
    data = b"the content written"
    for plant in ("symlink", "file"):
        w = store.writer(f"swap-{plant}")
        w.write(data)
        (own,) = (store.root / "ingest" / ref_key(f"swap-{plant}")).glob("data.*")
        own.rename(own.with_name("moved-aside"))
        if plant == "symlink":
            own.symlink_to(victim)
        else:
            own.write_bytes(b"planted bytes of the same size")
        info = w.commit(len(data), Digest.from_bytes(data))
        blob = store.blob_path(info.digest)
        assert not blob.is_symlink()
        assert blob.read_bytes() == data
        store.delete(info.digest)
    assert victim.read_bytes() == b"not the content"


def test_a_data_file_with_a_second_name_is_copied_not_claimed(store: LocalStore) -> None:
    data = b"0123456789"
    d = closed_ingest(store, "linked-twice", data[:4])
    (sealed,) = d.glob("sealed.*")
    other = d.parent.parent / "other-name"
    os.link(sealed, other)  # whoever holds this name could rewrite the bytes later
    with store.writer("linked-twice") as w:
        assert w.status().offset == 4
        w.write(data[4:])
        info = w.commit(len(data), Digest.from_bytes(data))
    with open(other, "r+b") as f:
        f.write(b"ZZZZ")
    other.unlink()
    assert read_blob(store, info.digest) == data


@pytest.mark.parametrize("prefix", ["sealed.", "data."])
def test_a_sparse_data_file_is_dropped_not_hashed(store: LocalStore, prefix: str) -> None:
    d = closed_ingest(store, "sparse", b"abc")
    (sealed,) = d.glob("sealed.*")
    planted = d / f"{prefix}{sealed.name.split('.', 1)[1]}"
    sealed.rename(planted)
    with open(planted, "r+b") as f:
        f.truncate(1 << 40)  # a TiB in a few KiB of disk: hashing it would take hours
    assert bounded(lambda: resume_and_commit(store, "sparse", 0, b"0123456789")) is None


def test_a_planted_directory_tree_does_not_stop_a_writer_or_leak(store: LocalStore) -> None:
    d = closed_ingest(store, "deep", b"abc")
    node = d / f"data.{'2' * 32}"
    for _ in range(1500):  # deeper than shutil.rmtree can recurse
        node.mkdir()
        node = node / "d"
    try:
        gc.collect()  # writers earlier tests left unclosed close their descriptors now
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(3):
            with store.writer("deep") as w:
                assert w.status().offset == 3
            assert not (d / f"data.{'2' * 32}").exists()  # removed, level by level
            (d / f"data.{'2' * 32}").mkdir()  # and planted again
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        remove_tree(d)  # pytest's own cleanup could not recurse this deep


def test_an_unreadable_ref_is_an_error_not_an_incomplete_ingest() -> None:
    # A ref that cannot be read now (EACCES here; EIO or EMFILE alike) is an error of its
    # kind: read as "no ref", the ingest would be started over and its bytes dropped.
    box = Path(tempfile.mkdtemp(prefix="ingestq-ref-", dir="/tmp"))
    try:
        box.chmod(0o755)
        store = LocalStore(box / "store", fsync=False)
        d = closed_ingest(store, "unreadable", b"abc")
        closed_ingest(store, "readable", b"xyz")
        chown_tree(box / "store", "nobody")  # nobody may write everywhere in the store
        os.chown(d / "ref", 0, 0)
        (d / "ref").chmod(0o600)  # but not read this one ref

        def kind(call: Callable[[], object]) -> str:
            try:
                call()
            except errdefs.ErrdefsError as e:
                return type(e).__name__
            return "ok"

        def child() -> list[object]:
            s = LocalStore(box / "store", fsync=False)
            return [
                kind(lambda: s.writer("unreadable").close()),
                kind(lambda: s.status("unreadable")),
                kind(lambda: s.abort("unreadable")),
                [st.ref for st in s.list_statuses()],  # the others are still listed
                kind(lambda: collect(s, GcOptions(dry_run=True))),
            ]

        assert run_in_child(child, user="nobody") == [
            "PermissionDenied", "PermissionDenied", "PermissionDenied", ["readable"], "ok",
        ]  # fmt: skip
        assert store.status("unreadable").offset == 3  # the bytes are still there
    finally:
        shutil.rmtree(box, ignore_errors=True)


def test_a_planted_lock_file_is_never_written_through_nor_blocks(
    store: LocalStore, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"must stay as it is")
    locks = store.root / "locks"
    locks.mkdir(exist_ok=True)
    lock = locks / f"ref-{ref_key('locked')}.lock"
    lock.symlink_to(victim)
    assert bounded(lambda: ingest(store, b"one", "locked")) is None
    assert victim.read_bytes() == b"must stay as it is"
    os.mkfifo(lock)
    assert bounded(lambda: store.writer("locked").close()) is None
    os.mkfifo(lock)
    holders: list[object] = []
    assert bounded(lambda: holders.append(store.status("locked").holder)) is None
    assert holders == [None]  # a FIFO is no lock anybody holds
    lock.unlink()


def test_planted_metadata_and_blob_files_fail_promptly_and_read_nothing_outside(
    store: LocalStore, tmp_path: Path
) -> None:
    info = ingest(store, b"labelled", label="x")
    meta = store.layout.blob_meta(info.digest)
    meta.unlink()
    os.mkfifo(meta)
    assert isinstance(bounded(lambda: store.info(info.digest)), errdefs.DataLoss)
    meta.unlink()
    outside = tmp_path / "outside"
    outside.write_bytes(b"labelled")  # the same bytes: a digest check would not tell
    blob = store.blob_path(info.digest)
    blob.chmod(0o644)
    blob.unlink()
    blob.symlink_to(outside)
    outcome = bounded(lambda: read_blob(store, info.digest))
    assert isinstance(outcome, errdefs.DataLoss)
    blob.unlink()


def test_a_symlink_planted_as_a_blob_is_moved_aside_and_the_content_ingested_again(
    store: LocalStore, tmp_path: Path
) -> None:
    info = ingest(store, b"the real content")
    outside = tmp_path / "outside"
    outside.write_bytes(b"other bytes")
    blob = store.blob_path(info.digest)
    blob.chmod(0o644)
    blob.unlink()
    blob.symlink_to(outside)
    assert isinstance(bounded(lambda: store.verify(info.digest)), errdefs.DataLoss)
    again = ingest(store, b"the real content", "again")  # not "already exists"
    assert not blob.is_symlink()
    assert read_blob(store, again.digest) == b"the real content"
    assert outside.read_bytes() == b"other bytes"
    assert [p.is_symlink() for p in (store.root / "quarantine").iterdir()] == [True]
    for p in (store.root / "quarantine").iterdir():
        p.unlink()  # the sandbox allows no symlink in the store


def test_a_commit_links_by_name_where_the_descriptor_link_is_refused(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A kernel or sandbox that refuses linkat through /proc (EXDEV, EPERM): the commit
    # links the data file by name, once it is checked to be the writer's file.
    def refused(fd: int, target: Path) -> bool:
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(target))

    monkeypatch.setattr(blobs_module, "link_descriptor", refused)
    info = ingest(store, b"by name")
    assert read_blob(store, info.digest) == b"by name"
    victim = tmp_path / "victim"
    victim.write_bytes(b"victim!")  # the same size as what the writer wrote
    w = store.writer("swapped")
    w.write(b"content")
    (own,) = (store.root / "ingest" / ref_key("swapped")).glob("data.*")
    own.rename(own.with_name("moved-aside"))
    own.symlink_to(victim)
    with pytest.raises(errdefs.FailedPrecondition):
        w.commit(7, Digest.from_bytes(b"content"))
    assert not store.exists(Digest.from_bytes(b"content"))
    assert victim.read_bytes() == b"victim!"
    store.abort("swapped")
