"""Planning pulls from OCI layout directories: what is ingested while planning, the
children in order, GC labels per parent, platform selection, and the plan's JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from ingestq import errdefs
from ingestq.fetch import manifests
from ingestq.fetch.source import Source
from ingestq.images.plan import MAX_DEPTH, PlannedBlob, PullPlan, plan_pull
from ingestq.images.request import PullRequest
from ingestq.store.digest import Digest
from ingestq.store.helpers import write_blob
from ingestq.store.local import LocalStore
from ingestq.store.values import Descriptor
from tests.images.helpers import layout, plan
from tests.servers import oci

GC = "containerd.io/gc.ref.content."


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store", fsync=False)


def _two_platforms(flavor: oci.Flavor = "oci") -> oci.Index:
    images = [
        oci.build_image([b"amd64 layer"], platform=oci.Platform("linux", "amd64"), flavor=flavor),
        oci.build_image(
            [b"arm64 layer", b"more"], platform=oci.Platform("linux", "arm64", "v8"), flavor=flavor
        ),
    ]
    return oci.build_index(images, flavor=flavor)


def test_a_manifest_is_ingested_while_planning_and_its_blobs_become_children(
    store: LocalStore, tmp_path: Path
) -> None:
    image = oci.build_image([b"one", b"two"])
    ref = layout(tmp_path / "layout", image)
    the_plan, _ = plan(store, PullRequest(ref))
    assert the_plan.name == f"oci-layout:{tmp_path / 'layout'}:v1" and the_plan.source is None
    assert str(the_plan.target.digest) == image.digest
    assert [b.ref for b in the_plan.manifests] == [f"manifest-{image.digest}"]
    assert [b.ref for b in the_plan.children] == [
        f"config-{image.config_descriptor.digest}",
        *(f"layer-{d.digest}" for d in image.layer_descriptors),
    ]
    assert [b.kind for b in the_plan.children] == ["config", "layer", "layer"]
    assert store.exists(Digest.parse(image.digest))
    assert not any(store.exists(b.desc.digest) for b in the_plan.children)
    assert the_plan.labels[image.digest] == {
        GC + "config": image.config_descriptor.digest,
        GC + "l.0": image.layer_descriptors[0].digest,
        GC + "l.1": image.layer_descriptors[1].digest,
    }
    assert the_plan.total == sum(b.desc.size for b in (*the_plan.manifests, *the_plan.children))
    layer = the_plan.children[1]
    request = layer.request()
    assert (request.ref, request.digest, request.size) == (
        layer.ref, layer.desc.digest, layer.desc.size,
    )  # fmt: skip
    assert request.source == {"type": "file", "path": str(request.source["path"])}


def test_an_index_plans_the_wanted_platforms_each_digest_once(
    store: LocalStore, tmp_path: Path
) -> None:
    index = _two_platforms()
    amd64, arm64 = index.images
    ref = layout(tmp_path / "layout", index)
    arm, _ = plan(store, PullRequest(ref, platforms=("linux/arm64",), name="arm"))
    assert arm.name == "arm"
    assert [str(b.desc.digest) for b in arm.manifests] == [index.digest, arm64.digest]
    assert {str(b.desc.digest) for b in arm.children} == set(arm64.blobs())
    assert arm.labels[index.digest] == {GC + "m.0": arm64.digest}
    assert not store.exists(Digest.parse(amd64.digest))

    everything, _ = plan(store, PullRequest(ref, all_platforms=True))
    assert len(everything.manifests) == 3
    assert {str(b.desc.digest) for b in everything.children} == {*amd64.blobs(), *arm64.blobs()}
    assert set(everything.labels[index.digest].values()) == {amd64.digest, arm64.digest}

    with pytest.raises(errdefs.NotFound, match="linux/s390x"):
        plan(store, PullRequest(ref, platforms=("linux/s390x",)))


def test_the_plan_round_trips_through_json(store: LocalStore, tmp_path: Path) -> None:
    ref = layout(tmp_path / "layout", _two_platforms("docker"))
    the_plan, _ = plan(store, PullRequest(ref, all_platforms=True))
    with_source = PullPlan(
        the_plan.name, the_plan.target, the_plan.manifests, the_plan.children,
        the_plan.labels, ("127.0.0.1:5000", "app"),
    )  # fmt: skip
    for p in (the_plan, with_source):
        assert PullPlan.from_json(json.loads(json.dumps(p.to_json()))) == p
    blob = PlannedBlob(the_plan.target, "index-x", {"type": "file", "path": "/x"}, "job-1")
    assert PlannedBlob.from_json(blob.to_json()) == blob
    with pytest.raises(errdefs.InvalidArgument, match="malformed pull plan"):
        PullPlan.from_json({"name": "x"})
    with pytest.raises(errdefs.InvalidArgument, match="malformed planned blob"):
        PlannedBlob.from_json({"ref": "x"})


class _MemoryImage:
    """An image whose blobs are in memory (plan_pull's ImageSource, without fetching)."""

    name = "memory"
    distribution_source = None

    def __init__(self, root: Descriptor, blobs: dict[Digest, bytes]) -> None:
        self.root = root
        self.blobs = blobs

    def resolve(self) -> Descriptor:
        return self.root

    def blob_source(self, desc: Descriptor) -> Source:
        raise AssertionError("not used")

    def spec(self, desc: Descriptor) -> dict[str, Any]:
        return {"type": "memory", "digest": str(desc.digest)}


def test_indexes_nested_deeper_than_the_limit_are_invalid_argument(store: LocalStore) -> None:
    blobs: dict[Digest, bytes] = {}
    inner: dict[str, Any] = {"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": []}
    desc = Descriptor(Digest.from_bytes(b""), 0, manifests.OCI_INDEX)
    for _ in range(MAX_DEPTH + 2):
        body = json.dumps(inner).encode()
        desc = Descriptor(Digest.from_bytes(body), len(body), manifests.OCI_INDEX)
        blobs[desc.digest] = body
        entry = {"mediaType": desc.media_type, "digest": str(desc.digest), "size": desc.size}
        inner = {"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": [entry]}
    image = _MemoryImage(desc, blobs)

    def fetch(blob: PlannedBlob) -> object:
        return write_blob(store, blob.ref, io.BytesIO(blobs[blob.desc.digest]), blob.desc)

    with pytest.raises(errdefs.InvalidArgument, match=f"deeper than {MAX_DEPTH}"):
        plan_pull(store, image, PullRequest("memory/x"), fetch)


def test_a_planned_blob_is_committed_only_with_its_descriptors_size(store: LocalStore) -> None:
    data = b"layer bytes"
    digest = Digest.from_bytes(data)

    def blob(size: int) -> PlannedBlob:
        return PlannedBlob(Descriptor(digest, size), f"layer-{digest}", {"type": "file"})

    assert not blob(len(data)).committed(store)
    write_blob(store, "seed", io.BytesIO(data), Descriptor(digest, len(data)))
    assert blob(len(data)).committed(store)
    assert blob(0).committed(store)  # size unknown: any size
    assert not blob(len(data) + 1).committed(store)
