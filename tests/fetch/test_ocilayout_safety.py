"""The OCI layout source reads ``oci-layout``, ``index.json`` and blobs beneath its file
root, as the file source does: a layout directory swapped for a symlink while it is
read (a real racing swapper thread) never makes it read outside the roots, and a
non-regular file where a layout file should be is InvalidArgument at once, never a
blocked read. Both ways of opening beneath a root (``openat2`` and the component walk)
are exercised."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.fetch.ocilayout import OCILayout
from ingestq.store.digest import Digest
from tests.fetch.racing import race
from tests.fetch.test_file_source_safety import bounded
from tests.servers import oci

OPENERS = [pytest.param(True, id="openat2"), pytest.param(False, id="walk")]


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    """``root/d``, a layout whose ``v1`` is ``inside``; ``outside``, a bait layout out
    of the root: any of its files, read, is told apart from the inside ones (its
    ``oci-layout`` has an unsupported version, its ``v1`` another digest, and the blob
    it holds at the path of the inside manifest other bytes)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    inside = oci.make_oci_layout(root / "d", "v1", [b"inside"])
    oci.make_oci_layout(outside, "v1", [b"SECRET"])
    (outside / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.SECRET"}))
    bait = outside / "blobs" / "sha256" / inside[7:]
    bait.write_bytes(b"SECRET")
    (tmp_path / "inside").write_text(inside)
    yield tmp_path


@pytest.mark.parametrize("use_openat2", OPENERS)
def test_swapping_the_layout_directory_for_a_symlink_never_reads_outside(
    base: Path, use_openat2: bool
) -> None:
    root, outside = base / "root", base / "outside"
    inside = Digest.parse((base / "inside").read_text())
    d = root / "d"

    def pull_once() -> str:
        layout = OCILayout(d, roots=[root], use_openat2=use_openat2)
        try:
            desc = layout.resolve("v1")
        except errdefs.InvalidArgument as e:
            assert "1.SECRET" in str(e), e
            return "outside oci-layout"
        if desc.digest != inside:
            return "outside index.json"
        try:
            layout.read_blob(desc)
        except errdefs.DataLoss:
            return "outside blob"
        return "inside"

    seen, refused = race(d, outside, pull_once)
    assert set(seen) == {"inside"}, (seen, refused)
    assert refused > 0, (seen, refused)


@pytest.mark.parametrize("use_openat2", OPENERS)
@pytest.mark.parametrize("restricted", [True, False], ids=["roots", "no-roots"])
@pytest.mark.parametrize("name", ["oci-layout", "index.json", "manifest"])
def test_a_fifo_in_place_of_a_layout_file_is_invalid_at_once(
    base: Path, name: str, restricted: bool, use_openat2: bool
) -> None:
    root = base / "root"
    d = root / "d"
    inside = Digest.parse((base / "inside").read_text())
    path = d / "blobs" / "sha256" / inside.encoded if name == "manifest" else d / name
    path.unlink()
    os.mkfifo(path)  # no writer ever comes: opening it for reading would block

    def pull() -> None:
        layout = OCILayout(d, roots=[root] if restricted else None, use_openat2=use_openat2)
        layout.read_blob(layout.resolve("v1"))

    err = bounded(pull)
    assert isinstance(err, errdefs.InvalidArgument), err
    assert "not a regular file" in str(err)


def test_an_oversized_index_is_resource_exhausted_not_read_whole(base: Path) -> None:
    d = base / "root" / "d"
    layout = OCILayout(d, roots=[base / "root"])
    with open(d / "index.json", "r+b") as f:
        f.truncate(64 << 30)  # sparse: 64 GiB that must never be read into memory
    with pytest.raises(errdefs.ResourceExhausted, match=r"index\.json exceeds"):
        layout.entries()
