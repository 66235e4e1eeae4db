"""The store root as an OCI image layout: ImageIndex over index.json, also under
concurrent puts from several processes."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, ImageIndex, LocalStore
from ingestq.store.annotations import REF_NAME
from ingestq.store.images import INDEX_MEDIA_TYPE
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
