"""``ingestq gc``, ``ingestq df``, ``ingestq images rm|check``, ``ingestq content rm``'s
refusal and ``ingestq ingest --expire`` through click's runner on a real store."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ingestq.store.digest import Digest
from ingestq.store.helpers import write_blob
from ingestq.store.local import LocalStore
from ingestq.store.values import Descriptor
from ingestq.worker.cli import cli
from ingestq.worker.cli.common import EXIT_CODES
from tests.servers import oci


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--root", str(root)], catch_exceptions=False)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def pulled(root: Path, tmp_path: Path, tag: str, layers: list[bytes]) -> str:
    layout = tmp_path / f"layout-{tag}"
    oci.make_oci_layout(layout, tag, layers)
    ok(run(root, "pull", f"oci-layout:{layout}:{tag}", "--name", tag))
    return tag


def orphan(root: Path, data: bytes) -> Digest:
    store = LocalStore(root, fsync=False)
    digest = Digest.from_bytes(data)
    write_blob(store, "orphan", io.BytesIO(data), Descriptor(digest, len(data)))
    return digest


def test_gc_prints_what_it_removed_and_dry_run_removes_nothing(root: Path, tmp_path: Path) -> None:
    pulled(root, tmp_path, "v1", [os.urandom(1000)])
    gone = orphan(root, b"unreferenced")
    dry = json.loads(ok(run(root, "gc", "--dry-run", "--json")).output)
    assert dry["dry_run"] and [b["digest"] for b in dry["blobs"]] == [str(gone)]
    assert LocalStore(root).exists(gone)
    text = ok(run(root, "gc")).output
    assert f"blob     {gone}" in text and "removed: 1 blobs (12 B)" in text
    assert not LocalStore(root).exists(gone)
    again = json.loads(ok(run(root, "gc", "--json")).output)
    assert again["blobs"] == [] and again["kept_blobs"] == 3


def test_images_rm_then_gc_frees_the_image_and_unknown_names_are_not_found(
    root: Path, tmp_path: Path
) -> None:
    pulled(root, tmp_path, "a", [b"shared", b"only a"])
    pulled(root, tmp_path, "b", [b"shared", b"only b"])
    result = run(root, "images", "rm", "a", "nope")
    assert result.exit_code == EXIT_CODES["NotFound"]
    assert "image nope" in result.output
    assert ok(run(root, "images", "-q")).output.split() == ["b"]
    removed = {b["digest"] for b in json.loads(ok(run(root, "gc", "--json")).output)["blobs"]}
    assert str(Digest.from_bytes(b"only a")) in removed
    assert str(Digest.from_bytes(b"shared")) not in removed
    ok(run(root, "images", "check", "b"))


def test_images_check_fails_for_a_missing_blob(root: Path, tmp_path: Path) -> None:
    pulled(root, tmp_path, "v1", [b"layer one", b"layer two"])
    ok(run(root, "images", "check", "v1"))
    layer = Digest.from_bytes(b"layer two")
    LocalStore(root).delete(layer)
    result = run(root, "images", "check", "v1", "--json")
    assert result.exit_code == EXIT_CODES["FailedPrecondition"]
    report = json.loads(result.stdout)
    assert report["missing"] == [str(layer)] and not report["complete"]
    assert run(root, "images", "check", "nope").exit_code == EXIT_CODES["NotFound"]


def test_images_check_verify_rereads_every_blob(root: Path, tmp_path: Path) -> None:
    pulled(root, tmp_path, "v1", [b"layer one", b"layer two"])
    ok(run(root, "images", "check", "v1", "--verify"))
    layer = Digest.from_bytes(b"layer two")
    path = LocalStore(root).layout.blob(layer)
    path.chmod(0o644)
    path.write_bytes(b"layer 2wo")  # same size, other bytes
    ok(run(root, "images", "check", "v1"))
    result = run(root, "images", "check", "v1", "--verify")
    assert result.exit_code == EXIT_CODES["FailedPrecondition"]
    assert f"damaged     {layer}" in result.output
    assert "1 damaged" in result.output


def test_content_rm_refuses_a_blob_an_image_uses_unless_forced(root: Path, tmp_path: Path) -> None:
    pulled(root, tmp_path, "v1", [b"used layer"])
    layer = str(Digest.from_bytes(b"used layer"))
    refused = run(root, "content", "rm", layer)
    assert refused.exit_code == EXIT_CODES["FailedPrecondition"]
    assert "used by image v1" in refused.output
    assert LocalStore(root).exists(layer)
    ok(run(root, "content", "rm", "--force", layer))
    assert not LocalStore(root).exists(layer)


def test_df_reports_totals_images_and_reclaimable(root: Path, tmp_path: Path) -> None:
    pulled(root, tmp_path, "a", [b"shared", b"a" * 500])
    pulled(root, tmp_path, "b", [b"shared", b"b" * 700])
    gone = orphan(root, b"reclaim me")
    f = tmp_path / "plain"
    f.write_bytes(b"plain ingest")
    ok(run(root, "ingest", str(f)))
    use = json.loads(ok(run(root, "df", "--json")).output)
    files = [p for p in (root / "blobs").rglob("*") if p.is_file()]
    assert use["blobs"] == {"count": len(files), "bytes": sum(p.stat().st_size for p in files)}
    images = {i["name"]: i for i in use["images"]}
    assert images["a"]["shared"] == images["b"]["shared"] == len(b"shared")
    assert use["plain_ingests"] == {"count": 1, "bytes": len(b"plain ingest")}
    assert use["reclaimable"]["blobs"] == 1
    assert use["reclaimable"]["bytes"] == len(b"reclaim me")
    assert LocalStore(root).exists(gone)
    assert "Reclaimable now:  1 blobs" in ok(run(root, "df")).output


def test_ingest_expire_lets_gc_remove_the_blob_after_its_time(root: Path, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"short-lived")
    digest = ok(run(root, "ingest", str(f), "--expire", "0s", "-q")).output.strip()
    assert json.loads(ok(run(root, "gc", "--json")).output)["blobs"][0]["digest"] == digest
    bad = run(root, "ingest", str(f), "--expire", "whenever")
    assert bad.exit_code == EXIT_CODES["InvalidArgument"]


def test_df_shows_quarantined_blobs_and_gc_removes_them_past_the_configured_age(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"to be damaged on disk" * 10
    digest = orphan(root, data)
    store = LocalStore(root, fsync=False)
    store.blob_path(digest).chmod(0o644)
    store.blob_path(digest).write_bytes(data[:10])
    assert not store.blobs.committed(digest, len(data))  # found damaged: moved aside
    assert len(os.listdir(root / "quarantine")) == 1
    assert json.loads(ok(run(root, "gc", "--json")).output)["quarantined"] == []  # 7 days
    df = json.loads(ok(run(root, "df", "--json")).output)
    assert df["quarantine"] == {"count": 1, "bytes": 10}
    assert df["reclaimable"]["quarantined"] == 0
    assert "Quarantined:      1  10 B" in ok(run(root, "df")).output
    monkeypatch.setenv("INGESTQ_GC_QUARANTINE_MAX_AGE", "0s")
    assert json.loads(ok(run(root, "df", "--json")).output)["reclaimable"]["quarantined"] == 1
    text = ok(run(root, "gc")).output
    assert "1 quarantined (10 B)" in text, text
    assert os.listdir(root / "quarantine") == []
