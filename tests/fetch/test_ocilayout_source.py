"""An OCI image layout directory as a source: references, resolution by name / digest /
the only entry, broken layouts, file roots. (Pulling a layout into the store:
tests/tasks/test_pull_oci_layout.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.fetch.ocilayout import OCILayout, parse_layout_reference
from ingestq.store.digest import Digest
from ingestq.store.values import Descriptor
from tests.servers import oci

DIGEST = "sha256:" + "cd" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("oci-layout:/srv/dir", ("/srv/dir", None, None)),
        ("oci-layout:/srv/dir:v1", ("/srv/dir", "v1", None)),
        ("oci-layout:rel:127.0.0.1:5000/app:v1", ("rel", "127.0.0.1:5000/app:v1", None)),
        (f"oci-layout:/srv/dir@{DIGEST}", ("/srv/dir", None, Digest.parse(DIGEST))),
        ("oci-layout:/srv/a@b:tag", ("/srv/a@b", "tag", None)),
    ],
)
def test_layout_references_split_like_skopeo(
    text: str, expected: tuple[str, str | None, Digest | None]
) -> None:
    assert parse_layout_reference(text) == expected


@pytest.mark.parametrize("text", ["oci:/dir:v1", "oci-layout:", "oci-layout::v1"])
def test_bad_layout_references_are_invalid_argument(text: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        parse_layout_reference(text)


def test_resolution_by_name_digest_and_only_entry(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    first = oci.make_oci_layout(layout, "v1", [b"one"])
    one = OCILayout(layout)
    desc = one.resolve()
    assert str(desc.digest) == first
    assert "org.opencontainers.image.ref.name" not in desc.annotations
    assert one.resolve("v1") == desc
    assert one.resolve(digest=Digest.parse(first)) == desc
    second = oci.make_oci_layout(layout, "v2", [b"two"])
    assert str(one.resolve("v2").digest) == second
    assert one.names() == ["v1", "v2"]
    with pytest.raises(errdefs.InvalidArgument, match="holds 2 images"):
        one.resolve()
    with pytest.raises(errdefs.NotFound, match="'v3'"):
        one.resolve("v3")
    image = oci.build_image([b"unlisted"])
    oci.add_to_oci_layout(layout, image, None)  # listed without a name
    unlisted = one.resolve(digest=Digest.parse(image.digest))
    assert unlisted.media_type == oci.OCI_MANIFEST
    with pytest.raises(errdefs.NotFound):
        one.read_blob(Descriptor(Digest.from_bytes(b"absent")))


def test_broken_layouts_and_file_roots(tmp_path: Path) -> None:
    with pytest.raises(errdefs.NotFound, match="no oci-layout"):
        OCILayout(tmp_path)
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(errdefs.InvalidArgument, match="imageLayoutVersion"):
        OCILayout(tmp_path)
    layout = tmp_path / "layout"
    digest = oci.make_oci_layout(layout, "v1", [b"x"])
    with pytest.raises(errdefs.PermissionDenied, match="file roots"):
        OCILayout(layout, roots=[tmp_path / "elsewhere"])
    assert str(OCILayout(layout, roots=[tmp_path]).resolve("v1").digest) == digest
    blob = layout / "blobs" / "sha256" / digest[7:]
    blob.chmod(0o644)
    blob.write_bytes(b"tampered")
    with pytest.raises(errdefs.DataLoss):
        OCILayout(layout).read_blob(OCILayout(layout).resolve("v1"))
