"""The ``ingestq`` CLI on an S3 store (``INGESTQ_STORE=s3://...``): ``content ingest |
ls | info | get | label | active | abort | rm``, the job command ``ingest`` (embedded),
and ``images`` (``check`` too), all working on the bucket."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ingestq.s3 import S3Location, S3Store
from ingestq.store import Digest
from ingestq.worker.cli import cli
from tests.servers import oci
from tests.servers.seaweed import S3Endpoint


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


def test_content_commands_work_on_the_bucket(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    root = tmp_path / "host"
    data = os.urandom(300_000)
    src = tmp_path / "blob"
    src.write_bytes(data)
    digest = str(Digest.from_bytes(data))
    r = run(root, "content", "ingest", str(src), "--ref", "one", "--label", "a=1")
    assert (r.exit_code, r.stdout) == (0, f"{digest} {len(data)}\n"), r.output
    store = S3Store(location, s3_endpoint.client(), root)
    assert dict(store.info(Digest.parse(digest)).labels) == {"a": "1"}
    assert run(root, "content", "ls", "-q").stdout.split() == [digest]
    assert json.loads(run(root, "content", "info", digest, "--json").stdout)["size"] == len(data)
    assert (
        CliRunner().invoke(cli, ["content", "get", digest, "--root", str(root)]).stdout_bytes
        == data
    )
    assert run(root, "content", "label", digest, "b=2").exit_code == 0
    assert dict(store.info(Digest.parse(digest)).labels) == {"a": "1", "b": "2"}
    with store.writer("partial") as w:
        w.write(b"half")
    assert "partial" in run(root, "content", "active").stdout
    assert run(root, "content", "abort", "partial").exit_code == 0
    assert store.list_statuses() == []
    assert run(root, "content", "rm", digest).exit_code == 0
    assert list(store.walk()) == []
    assert not (root / "blobs").exists()


def test_the_ingest_job_command_writes_into_the_bucket(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    root = tmp_path / "host"
    data = os.urandom(100_000)
    src = tmp_path / "file.bin"
    src.write_bytes(data)
    r = CliRunner().invoke(cli, ["ingest", str(src), "--json"], env={"INGESTQ_ROOT": str(root)})
    assert r.exit_code == 0, r.output
    digest = Digest.from_bytes(data)
    store = S3Store(location, s3_endpoint.client(), root)
    with store.reader_at(digest) as ra:
        assert ra.read_at(0, ra.size) == data
    assert run(root, "images", "-q").stdout == ""


def test_images_check_walks_the_image_in_the_bucket(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    root = tmp_path / "host"
    layers = [os.urandom(3000), os.urandom(5000)]
    layout = tmp_path / "layout"
    oci.make_oci_layout(layout, "v1", layers)
    r = run(root, "pull", f"oci-layout:{layout}:v1", "--name", "app:v1")
    assert r.exit_code == 0, r.output
    r = run(root, "images", "check", "app:v1")
    assert (r.exit_code, "complete  (4 blobs present)" in r.output) == (0, True), r.output
    assert run(root, "images", "check", "app:v1", "--verify").exit_code == 0
    client = s3_endpoint.client()
    # Same size, other bytes: only a re-read finds it.
    damaged = Digest.from_bytes(layers[0])
    key = location.blob(damaged)
    client.put_object(Bucket=location.bucket, Key=key, Body=os.urandom(len(layers[0])))
    assert run(root, "images", "check", "app:v1").exit_code == 0
    r = run(root, "images", "check", "app:v1", "--verify", "--json")
    assert r.exit_code == 19, r.output
    report = json.loads(r.stdout)
    assert (report["damaged"], report["verified"], report["complete"]) == (
        [str(damaged)],
        True,
        False,
    )
    # A blob of another size, and a missing one.
    client.put_object(Bucket=location.bucket, Key=key, Body=b"short")
    gone = Digest.from_bytes(layers[1])
    S3Store(location, client, root).delete(gone)
    r = run(root, "images", "check", "app:v1", "--json")
    assert r.exit_code == 19, r.output
    report = json.loads(r.stdout)
    assert (report["incomplete"], report["missing"]) == ([str(damaged)], [str(gone)])
    assert run(root, "images", "check", "nope").exit_code == 15


def test_max_bytes_refuses_an_ingest_that_does_not_fit_in_the_bucket(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    root = tmp_path / "host"
    src = tmp_path / "blob"
    src.write_bytes(os.urandom(200_000))
    digest = str(Digest.from_bytes(src.read_bytes()))
    r = run(root, "content", "ingest", str(src), "--ref", "one", "--digest", digest,
            "--max-bytes", "100K")  # fmt: skip
    assert r.exit_code == 18, r.output
    assert "store budget of 102400 bytes" in r.output
    store = S3Store(location, s3_endpoint.client(), root)
    assert (store.list_statuses(), store.multipart_uploads()) == ([], [])
    r = run(root, "content", "ingest", str(src), "--ref", "one", "--max-bytes", "1M")
    assert r.exit_code == 0, r.output
