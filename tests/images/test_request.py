"""Pull requests: validation before anything starts, the JSON form, and which image
source a reference opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.fetch.ocilayout import OCILayoutImage
from ingestq.fetch.registry.client import RegistryImage, RegistryOptions
from ingestq.images.request import PullRequest, open_image
from tests.servers import oci


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
    assert isinstance(local, OCILayoutImage) and local.name == "v1"
    with pytest.raises(errdefs.PermissionDenied):
        open_image(PullRequest(f"oci-layout:{tmp_path / 'layout'}:v1"), [tmp_path / "other"])
    remote = open_image(PullRequest("127.0.0.1:5000/app:v1"))
    assert isinstance(remote, RegistryImage)
    assert remote.distribution_source == ("127.0.0.1:5000", "app")
