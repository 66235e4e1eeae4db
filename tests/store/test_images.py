"""Image records (store.images): the store root as an OCI image layout, ImageIndex over
index.json (also under concurrent puts from several processes), and the record format
of named images (labels and times in annotations)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, ImageIndex, LocalStore
from ingestq.store.annotations import (
    IMAGE_CREATED_AT,
    IMAGE_LABEL_PREFIX,
    IMAGE_UPDATED_AT,
    REF_NAME,
)
from ingestq.store.images import (
    INDEX_MEDIA_TYPE,
    ImageRecord,
    record_from_entry,
    record_to_entry,
)
from tests.store import procs


def desc(text: str, size: int = 1) -> Descriptor:
    return Descriptor(
        Digest.from_bytes(text.encode()), size, "application/vnd.oci.image.manifest.v1+json"
    )


def test_a_store_root_is_an_oci_layout(tmp_path: Path) -> None:
    LocalStore(tmp_path)
    assert json.loads((tmp_path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((tmp_path / "index.json").read_text())
    assert index == {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}


def test_put_get_list_remove(tmp_path: Path) -> None:
    index = ImageIndex(tmp_path)
    index.put("alpine:3", desc("a"))
    index.put("busybox:1", Descriptor(Digest.from_bytes(b"b"), 2, annotations={"x": "y"}))
    index.put("alpine:3", desc("a2", 5))  # replaces
    assert [n for n, _ in index.list()] == ["busybox:1", "alpine:3"]
    assert index.get("alpine:3").size == 5
    got = index.get("busybox:1")
    assert dict(got.annotations) == {"x": "y", REF_NAME: "busybox:1"}
    raw = json.loads(index.path.read_text())
    assert raw["manifests"][0]["annotations"][REF_NAME] == "busybox:1"
    index.remove("alpine:3")
    with pytest.raises(errdefs.NotFound):
        index.get("alpine:3")
    with pytest.raises(errdefs.NotFound):
        index.remove("alpine:3")
    with pytest.raises(errdefs.InvalidArgument):
        index.put("", desc("x"))


def test_unnamed_entries_are_kept_but_not_listed(tmp_path: Path) -> None:
    index = ImageIndex(tmp_path)
    raw = json.loads(index.path.read_text())
    raw["manifests"].append({"mediaType": "x", "digest": str(Digest.from_bytes(b"u")), "size": 1})
    index.path.write_text(json.dumps(raw))
    index.put("named", desc("n"))
    assert [n for n, _ in index.list()] == ["named"]
    assert len(json.loads(index.path.read_text())["manifests"]) == 2


def test_a_damaged_index_is_data_loss(tmp_path: Path) -> None:
    index = ImageIndex(tmp_path)
    index.path.write_text("{broken")
    with pytest.raises(errdefs.DataLoss):
        index.list()
    with pytest.raises(errdefs.DataLoss):
        index.put("x", desc("x"))
    index.path.write_text(json.dumps({"manifests": {}}))
    with pytest.raises(errdefs.DataLoss):
        index.list()
    index.path.write_text(
        json.dumps({"manifests": [{"digest": "bad", "annotations": {REF_NAME: "n"}}]})
    )
    with pytest.raises(errdefs.DataLoss):
        index.get("n")


def test_a_missing_index_reads_as_empty(tmp_path: Path) -> None:
    index = ImageIndex(tmp_path)
    index.path.unlink()
    assert index.list() == []
    index.put("again", desc("x"))
    assert [n for n, _ in index.list()] == ["again"]


def test_concurrent_puts_from_processes_keep_a_valid_index(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    n, per = 4, 25
    start = ctx.Barrier(n)
    ps = [
        ctx.Process(target=procs.put_images, args=(str(tmp_path), f"p{i}", per, start))
        for i in range(n)
    ]
    for p in ps:
        p.start()
    for p in ps:
        p.join(60)
    assert [p.exitcode for p in ps] == [0] * n
    names = sorted(name for name, _ in ImageIndex(tmp_path).list())
    assert names == sorted(f"p{i}:{j}" for i in range(n) for j in range(per))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def record(name: str = "app:v1", **labels: str) -> ImageRecord:
    target = Descriptor(
        Digest.from_bytes(name.encode()), 42, "application/vnd.oci.image.index.v1+json", {"t": "1"}
    )
    return ImageRecord(name, target, labels, T0, T0 + timedelta(seconds=1))


def test_a_record_is_an_entry_with_labels_and_times_in_annotations() -> None:
    r = record(a="1", **{"b.c": "2"})
    entry = record_to_entry(r)
    assert (entry.digest, entry.size, entry.media_type) == (
        r.target.digest,
        42,
        r.target.media_type,
    )
    assert dict(entry.annotations) == {
        "t": "1",
        IMAGE_LABEL_PREFIX + "a": "1",
        IMAGE_LABEL_PREFIX + "b.c": "2",
        IMAGE_CREATED_AT: T0.isoformat(),
        IMAGE_UPDATED_AT: (T0 + timedelta(seconds=1)).isoformat(),
    }
    assert record_from_entry(r.name, entry, fallback=datetime.now(UTC)) == r


def test_an_entry_without_times_reads_the_fallback() -> None:
    entry = Descriptor(Digest.from_bytes(b"x"), 1, annotations={REF_NAME: "x", "k": "v"})
    got = record_from_entry("x", entry, fallback=T0)
    assert (got.created_at, got.updated_at, dict(got.labels)) == (T0, T0, {})
    assert dict(got.target.annotations) == {"k": "v"}  # the ref name is the record's name
    broken = Descriptor(entry.digest, 1, annotations={IMAGE_CREATED_AT: "yesterday"})
    assert record_from_entry("x", broken, fallback=T0).created_at == T0


def test_records_round_trip_through_index_json(tmp_path: Path) -> None:
    index = ImageIndex(tmp_path)
    index.add_record(record("a:1", x="y"))
    index.put("pulled:1", Descriptor(Digest.from_bytes(b"p"), 3))  # as a pull writes it
    assert index.record("a:1") == record("a:1", x="y")
    pulled = index.record("pulled:1")
    mtime = datetime.fromtimestamp(os.stat(index.path).st_mtime, UTC)
    assert pulled.created_at == pulled.updated_at == mtime == index.modified_at()
    assert [r.name for r in index.records()] == ["a:1", "pulled:1"]
    index.put_record(record("a:1", x="z"))
    assert dict(index.record("a:1").labels) == {"x": "z"}
    with pytest.raises(errdefs.NotFound):
        index.record("missing")


def test_add_record_refuses_a_taken_name_even_between_racing_threads(tmp_path: Path) -> None:
    index = ImageIndex(tmp_path)
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def add(i: int) -> None:
        barrier.wait(30)
        try:
            ImageIndex(tmp_path).add_record(record("same", who=str(i)))
            outcomes.append("added")
        except errdefs.AlreadyExists as e:
            assert str(e) == 'image "same": already exists'
            outcomes.append("exists")

    threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["added"] + ["exists"] * 5
    assert [r.name for r in index.records()] == ["same"]
    with pytest.raises(errdefs.InvalidArgument):
        index.add_record(record(""))
