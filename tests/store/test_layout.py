"""The store root's layout (store.layout): every path under a root, refs naming files
only through their sha256, and no other module in store/ or api/server/ joining layout
names onto a root itself."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from ingestq.store import Digest, LocalStore
from ingestq.store.layout import RootLayout, ref_key, ref_lock_name

REPO = Path(__file__).resolve().parents[2]
NAMES = (
    "blobs",
    "meta",
    "ingest",
    "locks",
    "quarantine",
    "resume",
    "jobs",
    "leases",
    "index.json",
    "oci-layout",
)


def test_every_path_is_under_the_root(tmp_path: Path) -> None:
    layout = RootLayout(tmp_path)
    d = Digest.from_bytes(b"x", "sha512")
    paths = [
        layout.oci_layout,
        layout.index,
        layout.index_lock,
        layout.blob(d),
        layout.blob_dir("sha512"),
        layout.blob_meta(d),
        layout.blob_lock(d),
        layout.quarantined(d, "20240101T000000000000Z"),
        layout.ingest_dir("ref"),
        layout.ref_lock("ref"),
        layout.resume_hint("ref"),
        layout.lease_file("default"),
        layout.leases_lock("default"),
        layout.job_record("0123"),
        layout.lock("x.lock"),
    ]
    for p in paths:
        assert p.is_relative_to(tmp_path), p
    assert layout.blob(d) == tmp_path / "blobs" / "sha512" / d.encoded
    assert layout.blob_meta(d) == tmp_path / "meta" / "sha512" / f"{d.encoded}.json"
    assert layout.lease_file("k8s.io") == tmp_path / "leases" / "k8s.io.json"


@pytest.mark.parametrize("ref", ["ref", "../../etc/passwd", "/abs", "a/b/../c", "x" * 4096])
def test_refs_name_files_only_through_their_sha256(tmp_path: Path, ref: str) -> None:
    layout = RootLayout(tmp_path)
    key = hashlib.sha256(ref.encode()).hexdigest()
    assert ref_key(ref) == key
    assert layout.ingest_dir(ref) == tmp_path / "ingest" / key
    assert layout.resume_hint(ref) == tmp_path / "resume" / f"{key}.json"
    assert layout.ref_lock(ref) == tmp_path / "locks" / ref_lock_name(ref)
    assert ref_lock_name(ref) == f"ref-{key}.lock"


def test_a_local_store_creates_only_layout_names(tmp_path: Path) -> None:
    LocalStore(tmp_path / "store")
    assert {p.name for p in (tmp_path / "store").iterdir()} <= set(NAMES)


# A join of a layout name onto a path, e.g. ``root / "index.json"``.
_ALTERNATIVES = "|".join(re.escape(n) for n in NAMES)
_JOIN = re.compile(r"/\s*[\"'](?:" + _ALTERNATIVES + r")[\"']")


@pytest.mark.parametrize("package", ["store", "api/server"])
def test_no_module_joins_layout_names_but_the_layout(package: str) -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sorted((REPO / package).rglob("*.py"))
        if path.name != "layout.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _JOIN.search(line)
    ]
    assert offenders == []
