"""Platform checks of a pull: junk ``--platform`` values are refused before anything is
fetched, an image lacking the wanted platform is NotFound naming the ones it has (a
real registry), and a layout pulled without a name is recorded under where it came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.jobs.config import Settings
from ingestq.jobs.local import LocalClient
from ingestq.store.images import ImageIndex
from ingestq.tasks.client import enqueue_pull
from tests.images.helpers import layout
from tests.servers import oci
from tests.servers.registry import Registry


@pytest.fixture
def local(tmp_path: Path) -> LocalClient:
    return LocalClient(Settings(root=tmp_path / "store", fsync=False))


@pytest.mark.parametrize(
    "junk", ["banana", "linux/banana", "plan10/amd64", "linux/arm/v9", "linux/amd64/v7"]
)
def test_a_junk_platform_is_invalid_argument_before_any_request(
    registry: Registry, local: LocalClient, junk: str
) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="unknown"):
        enqueue_pull(f"{registry.host}/app:v1", platforms=[junk], client=local)
    assert ImageIndex(local.store.root).list() == []


def test_a_single_platform_image_pulled_for_another_platform_is_not_found(
    registry: Registry, local: LocalClient
) -> None:
    oci.push_image(registry, "app", "v1", [b"amd64 only"], platform=oci.Platform("linux", "amd64"))
    name = f"{registry.host}/app:v1"
    job = enqueue_pull(name, platforms=["linux/arm64"], client=local)
    with pytest.raises(errdefs.NotFound) as caught:
        job.wait(timeout=60)
    message = str(caught.value)
    assert "linux/arm64" in message and "available: linux/amd64" in message
    assert ImageIndex(local.store.root).list() == []

    result = enqueue_pull(name, platforms=["linux/amd64"], client=local).wait(timeout=60)
    assert result.name == name


def test_an_index_lacking_the_platform_is_not_found_listing_its_platforms(
    registry: Registry, local: LocalClient
) -> None:
    images = [
        oci.build_image([b"a"], platform=oci.Platform("linux", "amd64")),
        oci.build_image([b"b"], platform=oci.Platform("linux", "arm64", "v8")),
    ]
    oci.push_index(registry, "multi", "v1", images)
    job = enqueue_pull(f"{registry.host}/multi:v1", platforms=["linux/s390x"], client=local)
    with pytest.raises(errdefs.NotFound, match="available: linux/amd64, linux/arm64"):
        job.wait(timeout=60)


def test_a_layout_pulled_without_a_name_is_recorded_under_where_it_came_from(
    local: LocalClient, tmp_path: Path
) -> None:
    image = oci.build_image([b"layer"])
    ref = layout(tmp_path / "saved", image, "v1")
    result = enqueue_pull(ref, client=local).wait(timeout=60)
    assert result.name == f"oci-layout:{tmp_path / 'saved'}:v1"
    assert str(ImageIndex(local.store.root).get(result.name).digest) == image.digest

    only = enqueue_pull(f"oci-layout:{tmp_path / 'saved'}", client=local).wait(timeout=60)
    assert only.name == f"oci-layout:{tmp_path / 'saved'}:v1"
    by_digest = enqueue_pull(f"oci-layout:{tmp_path / 'saved'}@{image.digest}", client=local)
    assert by_digest.wait(timeout=60).name == f"oci-layout:{tmp_path / 'saved'}@{image.digest}"
