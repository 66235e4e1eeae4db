"""Finalizing pulls: every blob committed first, GC and distribution-source labels, the
image recorded in ``index.json`` (an OCI view for Docker-typed images), idempotent."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.fetch import manifests
from ingestq.images.finalize import finalize, oci_view
from ingestq.images.request import PullRequest
from ingestq.store.annotations import SOURCE_DIGEST, SOURCE_MEDIA_TYPE
from ingestq.store.digest import Digest
from ingestq.store.helpers import read_blob
from ingestq.store.images import ImageIndex
from ingestq.store.local import LocalStore
from tests.images.helpers import fetch_children, layout, plan, pull
from tests.servers import oci

GC = "containerd.io/gc.ref.content."


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store", fsync=False)


def test_an_oci_image_is_recorded_as_it_is_once_every_blob_is_committed(
    store: LocalStore, tmp_path: Path
) -> None:
    image = oci.build_image([b"one", b"two"])
    ref = layout(tmp_path / "layout", image)
    the_plan, source = plan(store, PullRequest(ref, name="app:v1"))
    with pytest.raises(errdefs.FailedPrecondition, match=r"config-sha256:\w+ is not committed"):
        finalize(store, the_plan)
    assert ImageIndex(store.root).list() == []
    fetch_children(store, the_plan, source)
    info, recorded = finalize(store, the_plan)
    assert str(info.digest) == image.digest
    assert recorded == the_plan.target and not recorded.annotations
    entry = ImageIndex(store.root).get("app:v1")
    assert (entry.digest, entry.media_type) == (the_plan.target.digest, oci.OCI_MANIFEST)
    labels = store.info(Digest.parse(image.digest)).labels
    assert labels[GC + "config"] == image.config_descriptor.digest
    assert labels[GC + "l.1"] == image.layer_descriptors[1].digest
    assert not any(k.startswith("containerd.io/distribution.source") for k in labels)
    assert finalize(store, the_plan)[1] == recorded  # idempotent
    assert [n for n, _ in ImageIndex(store.root).list()] == ["app:v1"]


def test_a_registry_source_labels_every_blob_with_its_repositories(
    store: LocalStore, tmp_path: Path
) -> None:
    image = oci.build_image([b"layer"])
    the_plan, _, _ = pull(store, PullRequest(layout(tmp_path / "layout", image)))
    key = "containerd.io/distribution.source.127.0.0.1:5000"
    finalize(store, replace(the_plan, source=("127.0.0.1:5000", "b/app")))
    finalize(store, replace(the_plan, source=("127.0.0.1:5000", "a/app")))
    for blob in (*the_plan.manifests, *the_plan.children):
        assert store.info(blob.desc.digest).labels[key] == "a/app,b/app"


def test_a_docker_image_is_recorded_through_an_oci_view_naming_the_original(
    store: LocalStore, tmp_path: Path
) -> None:
    image = oci.build_image([b"layer"], flavor="docker")
    the_plan, info, recorded = pull(store, PullRequest(layout(tmp_path / "layout", image)))
    assert str(info.digest) == image.digest
    assert recorded.media_type == manifests.OCI_MANIFEST
    assert recorded.annotations == {
        SOURCE_DIGEST: image.digest,
        SOURCE_MEDIA_TYPE: oci.DOCKER_MANIFEST,
    }
    entry = ImageIndex(store.root).get(f"oci-layout:{tmp_path / 'layout'}:v1")
    assert entry.digest == recorded.digest
    assert entry.annotations[SOURCE_DIGEST] == image.digest
    view = json.loads(read_blob(store, recorded))
    assert view["config"]["digest"] == image.config_descriptor.digest
    assert view["layers"][0]["digest"] == image.layer_descriptors[0].digest
    assert store.info(recorded.digest).labels[GC + "config"] == image.config_descriptor.digest
    assert oci_view(store, the_plan) == replace(recorded, annotations={})  # deterministic


def test_a_docker_list_becomes_an_oci_index_over_the_pulled_views(
    store: LocalStore, tmp_path: Path
) -> None:
    images = [
        oci.build_image([b"a"], platform=oci.Platform("linux", "amd64"), flavor="docker"),
        oci.build_image([b"b"], platform=oci.Platform("linux", "arm64", "v8"), flavor="docker"),
    ]
    index = oci.build_index(images, flavor="docker")
    ref = layout(tmp_path / "layout", index)
    _, _, recorded = pull(store, PullRequest(ref, platforms=("linux/arm64",)))
    assert recorded.media_type == manifests.OCI_INDEX
    assert recorded.annotations[SOURCE_DIGEST] == index.digest
    assert recorded.annotations[SOURCE_MEDIA_TYPE] == oci.DOCKER_MANIFEST_LIST
    view = json.loads(read_blob(store, recorded))
    (entry,) = view["manifests"]  # only the pulled platform
    assert entry["mediaType"] == manifests.OCI_MANIFEST
    assert entry["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    assert store.info(recorded.digest).labels == {GC + "m.0": entry["digest"]}


def test_an_oci_index_of_oci_manifests_is_its_own_view(store: LocalStore, tmp_path: Path) -> None:
    index = oci.build_index([oci.build_image([b"a"])])
    _, _, recorded = pull(store, PullRequest(layout(tmp_path / "layout", index)))
    assert str(recorded.digest) == index.digest and not recorded.annotations


def test_an_index_repeating_its_entries_costs_one_parse_per_manifest(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker manifest lists nested three deep, each listing its child 16 times, over
    one Docker manifest: the OCI view and the image's size read each manifest once,
    not once per path (16³ paths to the manifest)."""
    from ingestq.images.plan import PlannedBlob, PullPlan
    from ingestq.images.size import tree_size
    from ingestq.store.helpers import write_blob
    from ingestq.store.values import Descriptor

    image = oci.build_image([b"layer"], flavor="docker")
    for data in [*image.blobs().values(), image.manifest]:
        desc = Descriptor(Digest.from_bytes(data), len(data))
        write_blob(store, f"blob-{desc.digest.encoded}", io.BytesIO(data), desc)
    level = Descriptor.from_oci(image.descriptor.to_json())
    planned = [level]
    for _ in range(3):
        body = json.dumps({
            "schemaVersion": 2, "mediaType": manifests.DOCKER_MANIFEST_LIST,
            "manifests": [level.to_oci()] * 16,
        }).encode()  # fmt: skip
        level = Descriptor(Digest.from_bytes(body), len(body), manifests.DOCKER_MANIFEST_LIST)
        write_blob(store, f"index-{level.digest.encoded}", io.BytesIO(body), level)
        planned.append(level)
    the_plan = PullPlan(
        name="nested:v1", target=level, labels={}, source=None, children=(),
        manifests=tuple(PlannedBlob(d, manifests.ref_key(d), {}) for d in planned),
    )  # fmt: skip
    parsed: list[Digest] = []
    real_parse = manifests.parse

    def counted(desc: Descriptor, data: bytes) -> manifests.Manifest | manifests.Index:
        parsed.append(desc.digest)
        return real_parse(desc, data)

    monkeypatch.setattr(manifests, "parse", counted)
    view = oci_view(store, the_plan)
    assert view.media_type == manifests.OCI_INDEX
    assert sorted(parsed) == sorted(d.digest for d in planned), "one parse per manifest"
    parsed.clear()
    size = tree_size(store, level)
    assert size is not None and size.size > 16**3 * image.descriptor.size
    assert len(parsed) == len(planned)
