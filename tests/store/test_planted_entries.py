"""Entries planted under ``blobs/<alg>/`` by someone with write access to the root: a
directory, a FIFO, a link to a file outside. None of them counts as a committed blob
(``exists``, ``info``), gc neither follows, removes nor stops on them, and an ingest of
that digest commits the real content."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, LocalStore, read_blob
from ingestq.store.gc import GcOptions, collect
from ingestq.store.helpers import write_blob

PLANTED = b"the real content"


def _plant_directory(path: Path, outside: Path) -> None:
    path.mkdir()
    (path / "inner").write_bytes(b"x")


def _plant_fifo(path: Path, outside: Path) -> None:
    os.mkfifo(path)


def _plant_link(path: Path, outside: Path) -> None:
    path.symlink_to(outside)


@pytest.mark.parametrize(
    "plant", [_plant_directory, _plant_fifo, _plant_link], ids=["directory", "fifo", "link"]
)
def test_a_planted_entry_is_no_blob_and_gc_goes_past_it(
    tmp_path: Path, plant: Callable[[Path, Path], None]
) -> None:
    store = LocalStore(tmp_path / "store", fsync=False)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(PLANTED)  # same size: a link would pass a size check
    digest = Digest.from_bytes(PLANTED)
    # Sorted after the planted one, unreferenced: gc must reach it.
    other = b"unreferenced"
    other_digest = Digest.from_bytes(other)
    write_blob(store, "other", io.BytesIO(other), Descriptor(other_digest, len(other)))
    blob_dir = store.layout.blob_dir("sha256")
    plant(blob_dir / digest.encoded, outside)

    assert not store.exists(digest)
    with pytest.raises(errdefs.DataLoss, match="not a regular file"):
        store.info(digest)
    assert [i.digest for i in store.walk()] == [other_digest], "List stops on it, or lists it"
    with pytest.raises(errdefs.NotFound):
        store.delete(digest)
    report = collect(store, GcOptions())
    assert (str(other_digest), len(other)) in report.blobs
    assert str(digest) not in [name for name, _ in report.blobs]
    assert outside.read_bytes() == PLANTED, "gc went through the link"
    assert os.path.lexists(blob_dir / digest.encoded), "gc removed what it does not own"


def test_an_ingest_over_a_planted_link_commits_the_real_content(tmp_path: Path) -> None:
    """A link at the blob's name to a file of the right size outside the root: the
    ingest does not take it for the blob; it commits the content (the link moved
    aside), and the outside file is untouched."""
    store = LocalStore(tmp_path / "store", fsync=False)
    outside = tmp_path / "outside.bin"
    decoy = b"x" * len(PLANTED)
    outside.write_bytes(decoy)
    digest = Digest.from_bytes(PLANTED)
    store.layout.blob_dir("sha256").mkdir(parents=True, exist_ok=True)
    (store.layout.blob_dir("sha256") / digest.encoded).symlink_to(outside)
    desc = Descriptor(digest, len(PLANTED))
    write_blob(store, "real", io.BytesIO(PLANTED), desc)
    assert store.exists(digest)
    assert read_blob(store, desc) == PLANTED
    assert outside.read_bytes() == decoy
    assert not (store.layout.blob_dir("sha256") / digest.encoded).is_symlink()
