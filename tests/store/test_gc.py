"""Garbage collection of a real store root (:mod:`ingestq.store.gc`): roots and edges,
expiry, dry runs, partial ingests, resume hints, expired leases, the image check, the
disk-usage totals against the files on disk, and a gc killed with SIGKILL midway."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store.budget import measure
from ingestq.store.digest import Digest
from ingestq.store.gc import (
    GC_ROOT_LABEL,
    REQUESTED_LABEL,
    GcOptions,
    JobLease,
    check_image,
    collect,
    images_using,
    parse_duration,
    requested_labels,
    usage,
)
from ingestq.store.helpers import read_blob, write_blob
from ingestq.store.images import ImageIndex
from ingestq.store.leases import EXPIRE_LABEL, LeaseStore
from ingestq.store.local import LocalStore
from ingestq.store.ownfiles import remove_tree
from ingestq.store.resume import ResumeHints
from ingestq.store.values import Descriptor
from tests.servers.util import wait_until

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store", fsync=False)


def put(store: LocalStore, data: bytes, labels: dict[str, str] | None = None) -> Digest:
    digest = Digest.from_bytes(data)
    write_blob(store, f"t-{digest}", io.BytesIO(data), Descriptor(digest, len(data)))
    if labels:
        from ingestq.store.values import Info

        now = datetime.now(UTC)
        store.update(Info(digest, len(data), now, now, labels), *(f"labels.{k}" for k in labels))
    return digest


def desc(digest: Digest, size: int, media_type: str) -> dict[str, object]:
    return {"mediaType": media_type, "digest": str(digest), "size": size}


def image(store: LocalStore, name: str, layers: list[bytes], *, record: bool = True) -> Descriptor:
    """Write an OCI image (config, layers, manifest) and record it under ``name``."""
    config = json.dumps({"os": "linux", "architecture": "amd64", "n": name}).encode()
    c = put(store, config)
    ls = [(put(store, layer), len(layer)) for layer in layers]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": desc(c, len(config), CONFIG),
            "layers": [desc(d, n, LAYER) for d, n in ls],
        }
    ).encode()
    m = put(store, manifest)
    target = Descriptor(m, len(manifest), OCI_MANIFEST)
    if record:
        ImageIndex(store.root).put(name, target)
    return target


def present(store: LocalStore, digest: Digest) -> bool:
    return store.layout.blob(digest).exists()


def test_gc_removes_unreferenced_content_and_keeps_every_kind_of_root(store: LocalStore) -> None:
    img = image(store, "app:v1", [b"layer-a", b"layer-b"])
    orphan = put(store, b"nobody wants me")
    rooted = put(store, b"gc root", {GC_ROOT_LABEL: "2026-01-01T00:00:00Z"})
    child = put(store, b"child of a root")
    parent = put(store, b"labelled parent", {"containerd.io/gc.ref.content.l.0": str(child)})
    requested = put(store, b"a producer asked", requested_labels(None))
    leased = put(store, b"under a lease")
    JobLease(store.leases(), "pull-1").protect(leased, parent)
    leases = LeaseStore(store.root)
    leases.create("default", "old", {EXPIRE_LABEL: "2000-01-01T00:00:00Z"})
    expired_only = put(store, b"only an expired lease")
    with pytest.raises(errdefs.NotFound):  # an expired lease reads as gone
        leases.add_resource("default", "old", "content", str(expired_only))

    report = collect(store)

    assert {d for d, _ in report.blobs} == {str(orphan), str(expired_only)}
    assert report.bytes == len(b"nobody wants me") + len(b"only an expired lease")
    assert report.leases == ("default/old",)
    for kept in (rooted, child, parent, requested, leased, img.digest):
        assert present(store, kept), kept
    assert not present(store, orphan)
    assert not store.layout.blob_meta(orphan).exists()
    assert check_image(store, "app:v1").complete


def test_a_dry_run_reports_the_same_and_removes_nothing(store: LocalStore) -> None:
    orphan = put(store, b"orphan")
    dry = collect(store, GcOptions(dry_run=True))
    assert [d for d, _ in dry.blobs] == [str(orphan)] and dry.dry_run
    assert present(store, orphan)
    assert [d for d, _ in collect(store).blobs] == [str(orphan)]


def test_removing_an_image_frees_what_only_it_holds(store: LocalStore) -> None:
    image(store, "a", [b"shared", b"only-a"])
    image(store, "b", [b"shared", b"only-b"])
    ImageIndex(store.root).remove("a")
    removed = {d for d, _ in collect(store).blobs}
    assert str(Digest.from_bytes(b"only-a")) in removed
    assert str(Digest.from_bytes(b"shared")) not in removed
    assert check_image(store, "b").complete
    assert images_using(store, Digest.from_bytes(b"shared")) == ["b"]


def test_an_index_keeps_its_manifests_and_their_children(store: LocalStore) -> None:
    inner = image(store, "unused", [b"platform layer"], record=False)
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX,
         "manifests": [desc(inner.digest, inner.size, OCI_MANIFEST)]}
    ).encode()  # fmt: skip
    i = put(store, index)
    ImageIndex(store.root).put("multi", Descriptor(i, len(index), OCI_INDEX))
    assert collect(store).blobs == ()
    assert check_image(store, "multi").complete


def test_expiry_makes_a_requested_blob_collectable_after_its_time(store: LocalStore) -> None:
    past = requested_labels(timedelta(seconds=-1))
    soon = requested_labels("1h")
    expired = put(store, b"expired", past)
    later = put(store, b"later", soon)
    assert parse_duration("30s") == timedelta(seconds=30)
    assert parse_duration("10m") == timedelta(minutes=10)
    assert parse_duration("7d") == timedelta(days=7)
    with pytest.raises(errdefs.InvalidArgument):
        parse_duration("soon")
    with pytest.raises(errdefs.InvalidArgument, match="too long"):
        parse_duration("2000000000d")  # more than a timedelta holds
    with pytest.raises(errdefs.InvalidArgument, match="past the year 9999"):
        requested_labels("520000w")
    assert [d for d, _ in collect(store).blobs] == [str(expired)]
    assert present(store, later)
    at = datetime.fromisoformat(soon[REQUESTED_LABEL].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < at - datetime.now(UTC) <= timedelta(hours=1)


def test_requests_carried_by_small_blob_files_are_roots_until_they_expire(
    store: LocalStore,
) -> None:
    # A small put keeps its labels in the blob file (no metadata file): gc reads them there.
    def small(data: bytes, labels: dict[str, str]) -> Digest:
        info = store.put(f"s-{len(data)}", Descriptor(Digest.from_bytes(data), len(data)), data,
                         labels)  # fmt: skip
        assert not store.layout.blob_meta(info.digest).exists()
        return info.digest

    kept = small(b"kept forever", requested_labels(None))
    later = small(b"kept for an hour", requested_labels("1h"))
    expired = small(b"expired", requested_labels(timedelta(seconds=-1)))
    rooted = small(b"a gc root", {GC_ROOT_LABEL: "yes"})
    garbage = small(b"nothing keeps it", {"other": "label"})
    removed = {d for d, _ in collect(store).blobs}
    assert removed == {str(expired), str(garbage)}
    assert all(present(store, d) for d in (kept, later, rooted))
    assert not any(present(store, d) for d in (expired, garbage))


def test_a_host_that_cannot_read_the_attributes_refuses_to_collect(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = store.put("k", Descriptor(Digest.from_bytes(b"kept"), 4), b"kept",
                     requested_labels(None))  # fmt: skip
    garbage = put(store, b"garbage")
    assert store.layout.xattr_marker.exists()

    # What an NFS mount before 4.2 answers for every attribute (no real peer here can
    # show one filesystem through two mounts that differ in this).
    def unseen(*args: object, **kwargs: object) -> bytes:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "getxattr", unseen)
    for dry_run in (True, False):
        with pytest.raises(errdefs.FailedPrecondition, match=r"user\.ingestq\.meta"):
            collect(store, GcOptions(dry_run=dry_run))
    assert present(store, kept.digest) and present(store, garbage)
    monkeypatch.undo()
    assert [d for d, _ in collect(store).blobs] == [str(garbage)]
    assert present(store, kept.digest)


def test_a_blob_referenced_by_an_expired_blob_is_kept_when_an_image_holds_it(
    store: LocalStore,
) -> None:
    image(store, "keep", [b"layer kept by the image"])
    put(store, b"expired", requested_labels(timedelta(seconds=-1)))
    layer = Digest.from_bytes(b"layer kept by the image")
    collect(store)
    assert present(store, layer)


def test_idle_partial_ingests_go_active_and_fresh_ones_stay(store: LocalStore) -> None:
    old = store.writer("old-ingest")
    old.write(b"partial")
    old.close()
    fresh = store.writer("fresh-ingest")
    fresh.write(b"partial")
    fresh.close()
    held = store.writer("held-ingest")  # a live writer holds its ref lock
    held.write(b"partial")
    long_ago = (datetime.now(UTC) - timedelta(days=2)).timestamp()
    for ref in ("old-ingest", "held-ingest"):
        path = store.layout.ingest_dir(ref)
        for f in [path, *path.iterdir()]:
            os.utime(f, (long_ago, long_ago))
    ResumeHints(store.root).put("gone-ingest", "http://x", '"etag"')
    ResumeHints(store.root).put("fresh-ingest", "http://x", '"etag"')
    try:
        report = collect(store, GcOptions(ingest_max_age=timedelta(hours=1)))
    finally:
        held.close()
    assert [r for r, _ in report.ingests] == ["old-ingest"]
    assert report.resume_hints == 1
    assert not store.layout.ingest_dir("old-ingest").exists()
    assert store.status("fresh-ingest").offset == len(b"partial")
    assert store.status("held-ingest").offset == len(b"partial")
    assert store.layout.resume_hint("fresh-ingest").exists()
    assert not store.layout.resume_hint("gone-ingest").exists()


def test_an_ingest_named_by_a_lease_stays_however_old(store: LocalStore) -> None:
    w = store.writer("leased-ingest")
    w.write(b"x")
    w.close()
    leases = LeaseStore(store.root)
    leases.create("default", "L", {})
    leases.add_resource("default", "L", "ingests", "leased-ingest")
    assert collect(store, GcOptions(ingest_max_age=timedelta(0))).ingests == ()
    leases.delete("default", "L")
    assert [r for r, _ in collect(store, GcOptions(ingest_max_age=timedelta(0))).ingests] == [
        "leased-ingest"
    ]


def test_the_opt_in_grace_keeps_recent_blobs(store: LocalStore) -> None:
    recent = put(store, b"recent")
    assert collect(store, GcOptions(grace=timedelta(hours=1))).blobs == ()
    assert collect(store, GcOptions(grace=timedelta(days=999_999_999))).blobs == ()
    assert [d for d, _ in collect(store).blobs] == [str(recent)]


def test_check_reports_missing_and_incomplete_blobs(store: LocalStore) -> None:
    image(store, "broken", [b"will vanish", b"will shrink"])
    gone, shrunk = Digest.from_bytes(b"will vanish"), Digest.from_bytes(b"will shrink")
    store.delete(gone)
    path = store.layout.blob(shrunk)
    path.chmod(0o644)
    path.write_bytes(b"short")
    check = check_image(store, "broken")
    assert not check.complete
    assert check.missing == (str(gone),)
    assert check.incomplete == (str(shrunk),)
    with pytest.raises(errdefs.NotFound):
        check_image(store, "no-such-image")


def _files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


def test_df_totals_equal_the_files_on_disk(store: LocalStore) -> None:
    image(store, "a", [b"shared layer", b"a" * 1000])
    image(store, "b", [b"shared layer", b"b" * 3000])
    put(store, b"plain", requested_labels(None))
    put(store, b"orphan")
    w = store.writer("partial")
    w.write(b"12345")
    w.close()
    use = usage(store, collect(store, GcOptions(dry_run=True)))
    blob_files = _files(store.layout.blobs)
    assert use.blobs == len(blob_files)
    assert use.bytes == sum(p.stat().st_size for p in blob_files)
    by_name = {i.name: i for i in use.images}
    shared = len(b"shared layer")
    assert by_name["a"].shared == by_name["b"].shared == shared
    assert by_name["a"].unique == by_name["a"].size - shared
    assert by_name["b"].unique > 3000
    assert (use.requested_blobs, use.requested_bytes) == (1, len(b"plain"))
    ingest_files = _files(store.layout.ingest)
    assert (use.partial_ingests, use.partial_bytes) == (
        1,
        sum(p.stat().st_size for p in ingest_files),
    )
    assert use.oldest_partial is not None
    assert [d for d, _ in use.reclaimable.blobs] == [str(Digest.from_bytes(b"orphan"))]


_GC_LOOP = """
import sys
from ingestq.store.gc import collect
from ingestq.store.local import LocalStore
from ingestq.store.ownfiles import remove_tree
collect(LocalStore(sys.argv[1], fsync=False))
"""


@pytest.mark.slow
def test_a_gc_killed_midway_leaves_a_store_the_next_run_completes(store: LocalStore) -> None:
    for i in range(20):
        image(store, f"img{i}", [f"layer {i}".encode(), b"common"])
    orphans = [put(store, os.urandom(64)) for _ in range(3000)]
    before = len(_files(store.layout.blobs))
    proc = subprocess.Popen([sys.executable, "-c", _GC_LOOP, str(store.root)])
    try:
        wait_until(
            lambda: len(_files(store.layout.blobs)) < before - 50 or proc.poll() is not None,
            60.0,
            "gc to start deleting",
        )
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    collect(store)
    for i in range(20):
        assert check_image(store, f"img{i}").complete
    assert not any(present(store, d) for d in orphans)
    metas = {p.name.removesuffix(".json") for p in _files(store.layout.meta)}
    assert metas <= {p.name for p in _files(store.layout.blobs)}


def test_gc_removes_old_temporary_files_of_killed_writers(
    store: LocalStore, tmp_path: Path
) -> None:
    kept = put(store, b"kept", {REQUESTED_LABEL: "never"})
    layout = store.layout
    old = time.time() - 2 * 24 * 3600  # older than the default ingest_max_age (24 h)
    (layout.meta / "sha256").mkdir(parents=True, exist_ok=True)
    layout.resume.mkdir(parents=True, exist_ok=True)
    stale = [
        layout.root / ".index.json.1a2b3c4d.tmp",  # an index.json write
        layout.meta / ".xattrs.5e6f7a8b.tmp",  # the attribute marker's write
        layout.meta / "sha256" / f".{kept.encoded}.json.0c0d0e0f.tmp",  # a metadata file
        layout.blob_dir("sha256") / f".{'ab' * 16}.tmp",  # a put without O_TMPFILE
        layout.resume / ".x.json.11223344.tmp",
    ]
    fresh = layout.meta / ".xattrs.99999999.tmp"  # a write going on now
    foreign = layout.root / ".mytool.tmp"  # not a name ingestq makes
    for path in [*stale, fresh, foreign]:
        path.write_bytes(b"partial")
    for path in [*stale, foreign]:
        os.utime(path, (old, old))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".precious.json.abcdef01.tmp").write_bytes(b"not the store's")
    os.utime(outside / ".precious.json.abcdef01.tmp", (old, old))
    link = layout.meta / ".link.json.deadbeef.tmp"
    link.symlink_to(outside / ".precious.json.abcdef01.tmp")  # not a regular file
    os.utime(link, (old, old), follow_symlinks=False)
    layout.fetched.symlink_to(outside)  # a directory swapped for a symlink: not followed

    dry = collect(store, GcOptions(dry_run=True))
    assert dry.temp_files == len(stale) and all(p.exists() for p in stale)
    assert usage(store, dry).to_json()["reclaimable"]["temp_files"] == len(stale)
    report = collect(store)
    assert report.temp_files == len(stale)
    assert report.to_json()["temp_files"] == len(stale)
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and foreign.exists() and link.is_symlink()
    assert (outside / ".precious.json.abcdef01.tmp").read_bytes() == b"not the store's"
    assert read_blob(store, kept) == b"kept"
    assert collect(store).temp_files == 0


def test_a_short_ingest_max_age_leaves_recent_temporary_files(store: LocalStore) -> None:
    recent = store.layout.root / ".index.json.1a2b3c4d.tmp"  # a write a minute ago
    recent.write_bytes(b"partial")
    minute_ago = time.time() - 60
    os.utime(recent, (minute_ago, minute_ago))
    report = collect(store, GcOptions(ingest_max_age=timedelta(0)))
    assert report.temp_files == 0 and recent.exists()


def _quarantine(store: LocalStore, data: bytes) -> Digest:
    """Commit ``data``, damage it on disk and let the store move it to ``quarantine/``."""
    digest = put(store, data)
    blob = store.layout.blob(digest)
    blob.chmod(0o644)
    blob.write_bytes(data[: len(data) // 2])
    assert not store.blobs.committed(digest, len(data))
    return digest


def test_quarantined_blobs_go_once_older_than_the_quarantine_age(store: LocalStore) -> None:
    _quarantine(store, b"q" * 4000)
    (name,) = os.listdir(store.layout.quarantine)
    kept = collect(store)  # the default keeps them for days
    assert kept.quarantined == () and os.listdir(store.layout.quarantine) == [name]
    dry = collect(store, GcOptions(dry_run=True, quarantine_max_age=timedelta(0)))
    assert dry.quarantined == ((name, 2000),) and os.listdir(store.layout.quarantine) == [name]
    report = collect(store, GcOptions(quarantine_max_age=timedelta(0)))
    assert report.quarantined == ((name, 2000),)
    assert report.to_json()["quarantined"] == [{"name": name, "size": 2000}]
    assert report.quarantine_bytes == 2000
    assert os.listdir(store.layout.quarantine) == []


def test_a_quarantined_file_ages_by_its_ctime_not_its_mtime(
    store: LocalStore,
) -> None:
    _quarantine(store, b"t" * 4000)
    (path,) = store.layout.quarantine.iterdir()
    os.utime(path, (0, 0))  # mtime says 1970; the move (ctime) was just now
    assert collect(store, GcOptions(quarantine_max_age=timedelta(hours=1))).quarantined == ()
    assert path.exists()


def test_things_planted_in_quarantine_are_removed_never_followed(
    store: LocalStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("kept")
    store.layout.quarantine.mkdir(parents=True)
    (store.layout.quarantine / "link").symlink_to(outside)
    (store.layout.quarantine / "tree").mkdir()
    (store.layout.quarantine / "tree" / "link").symlink_to(outside / "keep")
    report = collect(store, GcOptions(quarantine_max_age=timedelta(0)))
    assert sorted(report.quarantined) == [("link", 0), ("tree", 0)]
    assert os.listdir(store.layout.quarantine) == []
    assert (outside / "keep").read_text() == "kept"


def test_a_symlink_at_quarantine_is_never_followed(store: LocalStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"k" * 5000)
    (outside / "tree").mkdir()
    store.layout.quarantine.symlink_to(outside)
    assert measure(store.layout) == 0
    assert usage(store, collect(store, GcOptions(dry_run=True))).quarantined == 0
    assert collect(store, GcOptions(quarantine_max_age=timedelta(0))).quarantined == ()
    assert sorted(p.name for p in outside.iterdir()) == ["keep", "tree"]
    # A damaged blob is moved into a real quarantine/ made in the symlink's place.
    _quarantine(store, b"d" * 4000)
    assert not store.layout.quarantine.is_symlink()
    assert [p.stat().st_size for p in store.layout.quarantine.iterdir()] == [2000]
    assert sorted(p.name for p in outside.iterdir()) == ["keep", "tree"]


def test_a_quarantine_age_of_centuries_means_never(store: LocalStore) -> None:
    _quarantine(store, b"n" * 4000)
    report = collect(store, GcOptions(quarantine_max_age=timedelta(weeks=1_000_000)))
    assert report.quarantined == () and len(os.listdir(store.layout.quarantine)) == 1


def test_a_planted_tree_too_deep_to_remove_is_logged_and_kept(
    store: LocalStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.layout.quarantine.mkdir(parents=True)
    fd = os.open(store.layout.quarantine, os.O_RDONLY)
    try:
        for _ in range(1500):  # deeper than shutil.rmtree can recurse
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    _quarantine(store, b"x" * 4000)
    (damaged,) = set(os.listdir(store.layout.quarantine)) - {"d"}
    report = collect(store, GcOptions(quarantine_max_age=timedelta(0)))
    assert report.quarantined == ((damaged, 2000),)  # the damaged blob went, not the tree
    assert os.listdir(store.layout.quarantine) == ["d"]
    assert "cannot remove quarantine/d" in caplog.text
    remove_tree(store.layout.quarantine / "d")  # pytest's own cleanup could not recurse
