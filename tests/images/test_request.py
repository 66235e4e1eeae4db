"""Pull requests: validation before anything starts, the JSON form, and which image
source a reference opens."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.fetch.ocilayout import OCILayoutImage
from ingestq.fetch.options import FetchOptions
from ingestq.fetch.registry.client import RegistryImage, RegistryOptions
from ingestq.images.plan import PlannedBlob
from ingestq.images.request import PullRequest, open_image
from ingestq.ingest.attempt import ingest_once
from ingestq.store.digest import Digest
from ingestq.store.local import LocalStore
from ingestq.store.values import Descriptor
from tests.servers import oci
from tests.tasks.blobserver import Behaviour, BlobServer


def test_the_json_form_round_trips() -> None:
    request = PullRequest(
        "127.0.0.1:5000/app:v1", ("linux/arm64",), False,
        RegistryOptions(plain_http=True), "mine", 2,
    )  # fmt: skip
    assert PullRequest.from_json(request.to_json()) == request
    assert PullRequest.from_json(PullRequest("a/b").to_json()) == PullRequest("a/b")


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (PullRequest("Bad/Name"), None),
        (PullRequest("a/b", platforms=("linux/",)), None),
        (PullRequest("a/b", concurrency=0), "concurrency"),
        (PullRequest("a/b", name=""), "name"),
        (PullRequest("oci-layout:"), None),
    ],
)
def test_validate_refuses_malformed_requests(request_: PullRequest, match: str | None) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=match):
        request_.validate()


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"reference": 1},
        {"reference": "a/b", "platforms": "linux/amd64"},
        {"reference": "a/b", "concurrency": "4"},
        {"reference": "a/b", "concurrency": True},
    ],
)
def test_malformed_json_is_invalid_argument(obj: dict[str, object]) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        PullRequest.from_json(obj)


def test_open_image_picks_the_layout_or_the_registry(tmp_path: Path) -> None:
    oci.make_oci_layout(tmp_path / "layout", "v1", [b"x"])
    local = open_image(PullRequest(f"oci-layout:{tmp_path / 'layout'}:v1"))
    assert (
        isinstance(local.image, OCILayoutImage)
        and local.name == f"oci-layout:{tmp_path / 'layout'}:v1"
    )
    elsewhere = FetchOptions(file_roots=(tmp_path / "other",))
    with pytest.raises(errdefs.PermissionDenied):
        open_image(PullRequest(f"oci-layout:{tmp_path / 'layout'}:v1"), elsewhere)
    remote = open_image(PullRequest("127.0.0.1:5000/app:v1"))
    assert isinstance(remote.image, RegistryImage)
    assert remote.distribution_source == ("127.0.0.1:5000", "app")


def test_registry_blob_sources_follow_the_low_speed_rule_of_the_options(
    blob_server: BlobServer, tmp_path: Path
) -> None:
    slow = Behaviour(data=os.urandom(4096), trickle=(1, 0.25))
    blob_server.add(f"/v2/app/blobs/{slow.digest}", slow)
    request = PullRequest(f"{blob_server.url.removeprefix('http://')}/app:v1")
    image = open_image(request, FetchOptions(http_low_speed_limit=1024, http_low_speed_time=1))
    desc = Descriptor(Digest.parse(slow.digest), len(slow.data), oci.OCI_LAYER)
    planned = PlannedBlob(desc, f"layer-{desc.digest}", image.spec(desc))
    store = LocalStore(tmp_path / "store", fsync=False, small_blob_max=0)  # resumable path
    with pytest.raises(errdefs.Unavailable, match="slower than 1024 bytes/s over 1 s"):
        ingest_once(store, image.blob_source(desc), planned.request())
    assert store.status(planned.ref).offset > 0  # kept for the retry to resume
