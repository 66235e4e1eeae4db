"""``ingestq gc`` and ``ingestq df`` on an S3 store: the mark from the bucket's
``index.json`` and the blobs' labels, the sweep of unreferenced blob and metadata
objects, of idle ingests and of stray multipart uploads (against SeaweedFS)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ingestq.s3 import S3Location, S3Store
from ingestq.store import Descriptor, Digest
from ingestq.store.gc import GC_ROOT_LABEL
from ingestq.worker.cli import cli
from tests.servers.seaweed import S3Endpoint

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def location(
    s3_endpoint: S3Endpoint, s3_bucket: str, s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> S3Location:
    for name, value in s3_endpoint.env().items():
        monkeypatch.setenv(name, value)
    location = S3Location(s3_bucket, s3_prefix)
    monkeypatch.setenv("INGESTQ_STORE", str(location))
    return location


def run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--root", str(root)])


def put(store: S3Store, data: bytes, labels: dict[str, str] | None = None) -> Digest:
    digest = Digest.from_bytes(data)
    with store.writer(f"put-{digest.encoded[:12]}", Descriptor(digest, len(data))) as w:
        w.write(data)
        w.commit(len(data), digest, labels)
    return digest


def keys(store: S3Store, under: str) -> set[str]:
    return {o.key for o in store.bucket.list_objects(store.location.key(under) + "/")}


def test_gc_removes_blobs_no_image_or_label_keeps(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    root = tmp_path / "host"
    store = S3Store(location, s3_endpoint.client(), root)
    config = put(store, b'{"architecture":"amd64","os":"linux"}')
    layer = put(store, os.urandom(70_000))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/json", "digest": str(config), "size": 37},
            "layers": [{"mediaType": "application/octet-stream", "digest": str(layer)}],
        }
    ).encode()
    root_digest = put(store, manifest)
    store.image_index().put("app:v1", Descriptor(root_digest, len(manifest), OCI_MANIFEST))
    pinned = put(store, b"pinned", {GC_ROOT_LABEL: "x"})
    garbage = put(store, os.urandom(50_000), {"a": "1"})
    assert len(keys(store, "meta")) == 2  # only labelled small blobs have a meta object

    dry = run(root, "gc", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert [b["digest"] for b in json.loads(dry.stdout)["blobs"]] == [str(garbage)]
    assert store.exists(garbage)

    df = run(root, "df", "--json")
    assert df.exit_code == 0, df.output
    use = json.loads(df.stdout)
    assert use["blobs"]["count"] == 5
    assert use["reclaimable"]["blobs"] == 1 and use["reclaimable"]["bytes"] == 50_000
    assert [(i["name"], i["blobs"]) for i in use["images"]] == [("app:v1", 3)]

    r = run(root, "gc", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert (report["blobs"], report["kept_blobs"]) == (
        [{"digest": str(garbage), "size": 50_000}],
        4,
    )
    assert not store.exists(garbage)
    assert store.bucket.head(store.location.meta(garbage)) is None
    for kept in (config, layer, root_digest, pinned):
        assert store.exists(kept)
    assert keys(store, "meta") == {store.location.meta(pinned)}

    # Once the image is forgotten, its tree goes at the next run; the pinned blob stays.
    store.image_index().remove("app:v1")
    r = run(root, "gc", "--json")
    assert r.exit_code == 0, r.output
    assert {b["digest"] for b in json.loads(r.stdout)["blobs"]} == {
        str(config),
        str(layer),
        str(root_digest),
    }
    assert [i.digest for i in store.walk()] == [pinned]


def test_gc_aborts_idle_ingests_and_stray_uploads_but_not_held_ones(
    location: S3Location,
    s3_endpoint: S3Endpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "host"
    store = S3Store(location, s3_endpoint.client(), root)
    with store.writer("idle") as w:
        w.write(b"x" * 1000)
    stray_key = store.location.key("staging", "stray")
    stray = store.bucket.create_upload(stray_key)
    held = store.writer("held")
    try:
        held.write(b"y" * 10)
        r = run(root, "gc", "--json")  # the default max age (24 h) keeps them all
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["ingests"] == []
        assert (stray_key, stray) in store.multipart_uploads()

        monkeypatch.setenv("INGESTQ_GC_INGEST_MAX_AGE", "0s")
        r = run(root, "gc", "--json")
        assert r.exit_code == 0, r.output
        gone = [i["ref"] for i in json.loads(r.stdout)["ingests"]]
        assert gone == ["idle", f"upload:{stray_key}"]
        assert [s.ref for s in store.list_statuses()] == ["held"]
        assert store.multipart_uploads() == []
        assert [k for k in keys(store, "ingests") if k.endswith(".tail")] == []
    finally:
        held.close()
