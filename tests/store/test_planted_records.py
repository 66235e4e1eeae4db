"""The store's own records (lease files, ``index.json``, a blob's metadata file, resume
hints) replaced by what would hang or exhaust a reader: a FIFO nobody writes, a link to
``/dev/zero``, a sparse file of gigabytes. Each is read to a bound, never through a
link, never waiting on a FIFO: an error of its kind, or the record taken as absent."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, LocalStore
from ingestq.store.gc import GcOptions, collect
from ingestq.store.helpers import write_blob
from ingestq.store.layout import RootLayout
from ingestq.store.resume import ResumeHints
from tests.servers.util import bounded


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _sparse(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(4 << 30)


PLANTS = pytest.mark.parametrize(
    "plant", [_fifo, _zero, _sparse], ids=["fifo", "dev-zero", "sparse-4GiB"]
)


def _replace(path: Path, plant: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    plant(path)


@PLANTS
def test_a_planted_lease_record_is_data_loss(tmp_path: Path, plant: Callable[[Path], None]) -> None:
    store = LocalStore(tmp_path / "store", fsync=False)
    store.leases().create("default", "l1", {})
    _replace(store.layout.lease_file("default"), plant)
    error = bounded(lambda: store.leases().list("default"))
    assert isinstance(error, errdefs.DataLoss), error


@PLANTS
def test_a_planted_index_json_stops_gc_with_data_loss_deleting_nothing(
    tmp_path: Path, plant: Callable[[Path], None]
) -> None:
    store = LocalStore(tmp_path / "store", fsync=False)
    data = b"unreferenced"
    desc = Descriptor(Digest.from_bytes(data), len(data))
    write_blob(store, "x", io.BytesIO(data), desc)
    _replace(store.layout.index, plant)
    error = bounded(lambda: collect(store, GcOptions()))
    assert isinstance(error, errdefs.DataLoss), error
    assert store.exists(desc.digest), "gc deleted without reading the image index"


@PLANTS
def test_a_planted_metadata_file_reads_as_no_labels_or_its_kind(
    tmp_path: Path, plant: Callable[[Path], None]
) -> None:
    """A FIFO or a link is not a metadata file, and a sparse giant is longer than any
    labels take: DataLoss, promptly (a caller that went on without the labels could
    drop a gc root)."""
    store = LocalStore(tmp_path / "store", fsync=False)
    store.blobs.xattrs = False  # labels in a metadata file beside the blob
    data = b"labelled"
    desc = Descriptor(Digest.from_bytes(data), len(data))
    write_blob(store, "x", io.BytesIO(data), desc, {"k": "v"})
    meta = store.layout.blob_meta(desc.digest)
    assert meta.exists()
    _replace(meta, plant)
    error = bounded(lambda: store.info(desc.digest))
    assert isinstance(error, errdefs.DataLoss), error
    # List shows the damage (a blob whose labels cannot be read is not hidden).
    assert isinstance(bounded(lambda: list(store.walk())), errdefs.DataLoss)


@PLANTS
def test_a_planted_resume_hint_reads_as_none(tmp_path: Path, plant: Callable[[Path], None]) -> None:
    root = tmp_path / "store"
    hints = ResumeHints(root)
    LocalStore(root, fsync=False)
    hints.put("ref", "src", "etag-1", 10)
    path = RootLayout(root).resume_hint("ref")
    assert path.exists()
    _replace(path, plant)
    read: list[object] = []
    assert bounded(lambda: read.append(hints.read("ref", "src"))) is None
    assert read == [None]


def test_a_lease_record_never_grows_past_what_is_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change that would make a namespace's lease record longer than it may be read
    (``MAX_LEASES_FILE``, 10 KB here) is ResourceExhausted and writes nothing: the
    record stays readable."""
    from ingestq.store import leases as leases_module

    monkeypatch.setattr(leases_module, "MAX_LEASES_FILE", 10_000)
    leases = LocalStore(tmp_path / "store", fsync=False).leases()
    leases.create("default", "l1", {})
    leases.add_resource("default", "l1", "ingests", "r" * 4000)
    with pytest.raises(errdefs.ResourceExhausted, match="write leases of default"):
        leases.add_resources("default", "l1", [("ingests", f"{i}" * 4000) for i in range(1, 4)])
    assert leases.resources("default", "l1") == (("ingests", "r" * 4000),)


def test_labels_at_the_bound_are_written_and_read_back_whole(tmp_path: Path) -> None:
    """Control characters take 6 bytes of JSON each: labels at their bound (256 KiB)
    made a 1.5 MB metadata file, which a 1 MiB read bound took for garbled (labels
    lost, gc roots with them). Whatever passes the label rules is read back."""
    store = LocalStore(tmp_path / "store", fsync=False)
    store.blobs.xattrs = False
    data = b"escaped labels"
    desc = Descriptor(Digest.from_bytes(data), len(data))
    labels = {f"k{i:02d}": "\x01" * 4092 for i in range(64)}
    write_blob(store, "x", io.BytesIO(data), desc, labels)
    assert store.layout.blob_meta(desc.digest).stat().st_size > 1 << 20
    assert dict(store.info(desc.digest).labels) == labels


def test_a_manifest_gc_cannot_read_whole_stops_it_deleting_nothing(tmp_path: Path) -> None:
    """A recorded image's manifest over the 4 MiB gc reads: read as having no
    references, its config would be deleted; gc stops with DataLoss instead."""
    from ingestq.store.images import ImageIndex

    store = LocalStore(tmp_path / "store", fsync=False)
    config = b"{}"
    config_desc = Descriptor(Digest.from_bytes(config), len(config))
    write_blob(store, "config", io.BytesIO(config), config_desc)
    mt = "application/vnd.oci.image.manifest.v1+json"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt, "layers": [],
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": str(config_desc.digest), "size": len(config)},
        "annotations": {"padding": "p" * (4 << 20)},
    }).encode()  # fmt: skip
    manifest_desc = Descriptor(Digest.from_bytes(manifest), len(manifest), mt)
    write_blob(store, "manifest", io.BytesIO(manifest), manifest_desc)
    ImageIndex(store.root).put("app:v1", manifest_desc)
    error = bounded(lambda: collect(store, GcOptions()))
    assert isinstance(error, errdefs.DataLoss), error
    assert "references cannot be known" in str(error)
    assert store.exists(config_desc.digest)
