"""The size walk of recorded images (what ``ingestq images`` shows): sizes, platforms,
the original digest of an image recorded through a view, incomplete images."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestq.images.request import PullRequest
from ingestq.images.size import ImageSummary, TreeSize, list_images, tree_size
from ingestq.store.digest import Digest
from ingestq.store.local import LocalStore
from ingestq.store.values import Descriptor
from tests.images.helpers import layout, pull
from tests.servers import oci


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store", fsync=False)


def _size(image: oci.Image) -> int:
    return image.descriptor.size + sum(len(b) for b in image.blobs().values())


def test_a_manifest_weighs_itself_its_config_and_layers_on_its_config_platform(
    store: LocalStore, tmp_path: Path
) -> None:
    image = oci.build_image([b"x" * 100, b"y" * 50], platform=oci.Platform("linux", "arm", "v7"))
    _, _, recorded = pull(store, PullRequest(layout(tmp_path / "layout", image)))
    assert tree_size(store, recorded) == TreeSize(_size(image), ("linux/arm",))
    assert list_images(store) == [
        ImageSummary(f"oci-layout:{tmp_path / 'layout'}:v1", oci.OCI_MANIFEST, image.digest,
                     image.digest, _size(image), ("linux/arm",)),
    ]  # fmt: skip


def test_an_index_counts_the_pulled_platforms_only_and_names_them_from_the_index(
    store: LocalStore, tmp_path: Path
) -> None:
    amd64 = oci.build_image([b"a" * 10], platform=oci.Platform("linux", "amd64"), flavor="docker")
    arm64 = oci.build_image(
        [b"b" * 20], platform=oci.Platform("linux", "arm64", "v8"), flavor="docker"
    )
    index = oci.build_index([amd64, arm64], flavor="docker")
    ref = layout(tmp_path / "layout", index)
    _, _, recorded = pull(store, PullRequest(ref, platforms=("linux/arm64",), name="multi"))
    root = Digest.parse(index.digest)
    original = store.info(root)
    assert tree_size(store, Descriptor(root, original.size, oci.DOCKER_MANIFEST_LIST)) == (
        TreeSize(index.descriptor.size + _size(arm64), ("linux/arm64",))
    )
    (summary,) = list_images(store)
    assert summary.name == "multi"
    assert summary.media_type == oci.DOCKER_MANIFEST_LIST
    assert summary.digest == index.digest and summary.recorded == str(recorded.digest)
    assert summary.platforms == ("linux/arm64",)
    assert summary.size == tree_size(store, recorded).size  # type: ignore[union-attr]
    assert summary.to_json() == {
        "name": "multi",
        "media_type": oci.DOCKER_MANIFEST_LIST,
        "digest": index.digest,
        "recorded": str(recorded.digest),
        "size": summary.size,
        "platforms": ["linux/arm64"],
    }


def test_an_image_missing_a_blob_has_no_size(store: LocalStore, tmp_path: Path) -> None:
    image = oci.build_image([b"layer"])
    _, _, recorded = pull(store, PullRequest(layout(tmp_path / "layout", image)))
    store.delete(Digest.parse(image.layer_descriptors[0].digest))
    assert tree_size(store, recorded) is None
    assert list_images(store) == [
        ImageSummary(
            f"oci-layout:{tmp_path / 'layout'}:v1",
            oci.OCI_MANIFEST,
            image.digest,
            image.digest,
            None,
            (),
        )
    ]
    store.delete(recorded.digest)
    assert tree_size(store, recorded) is None
