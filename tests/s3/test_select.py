"""Selecting the S3 store: ``INGESTQ_STORE=s3://BUCKET/PREFIX`` and the AWS environment
(``jobs/config.py``), the URL's parts, and the hint when boto3 is not installed."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.jobs.config import Settings, open_store
from ingestq.s3 import S3Location, S3Store
from ingestq.store import Descriptor, Digest, LocalStore, write_blob
from tests.servers.seaweed import S3Endpoint


def test_s3_urls_name_a_bucket_and_a_prefix() -> None:
    assert S3Location.parse("s3://bucket") == S3Location("bucket", "")
    assert S3Location.parse("s3://bucket/") == S3Location("bucket", "")
    assert S3Location.parse("s3://bucket/a/b/") == S3Location("bucket", "a/b")
    assert S3Location("bucket", "a/b").blob(Digest.from_bytes(b"")) == (
        "a/b/blobs/sha256/" + Digest.from_bytes(b"").encoded
    )
    for bad in ("http://bucket/x", "s3:///x", "bucket/x"):
        with pytest.raises(errdefs.InvalidArgument):
            S3Location.parse(bad)


def test_ingestq_store_selects_the_s3_store(
    s3_endpoint: S3Endpoint,
    s3_bucket: str,
    s3_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in s3_endpoint.env().items():
        monkeypatch.setenv(name, value)
    env = {"INGESTQ_STORE": f"s3://{s3_bucket}/{s3_prefix}", "INGESTQ_ROOT": str(tmp_path)}
    settings = Settings.from_env(env)
    assert settings.store_url == env["INGESTQ_STORE"]
    store = open_store(settings)
    assert isinstance(store, S3Store)
    assert store.location == S3Location(s3_bucket, s3_prefix)
    assert store.root == tmp_path
    data = b"selected"
    info = write_blob(
        store, "sel", io.BytesIO(data), Descriptor(Digest.from_bytes(data), len(data))
    )
    raw = s3_endpoint.client().get_object(
        Bucket=s3_bucket, Key=f"{s3_prefix}/blobs/sha256/{info.digest.encoded}"
    )
    assert raw["Body"].read() == data


def test_without_ingestq_store_the_local_store_is_opened(tmp_path: Path) -> None:
    settings = Settings.from_env({"INGESTQ_ROOT": str(tmp_path)})
    assert settings.store_url is None
    assert isinstance(open_store(settings), LocalStore)


def test_another_scheme_is_invalid(tmp_path: Path) -> None:
    settings = Settings.from_env({"INGESTQ_STORE": "gs://bucket", "INGESTQ_ROOT": str(tmp_path)})
    with pytest.raises(errdefs.InvalidArgument):
        open_store(settings)


def test_without_boto3_an_s3_store_says_how_to_install_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['boto3'] = None; sys.modules['botocore'] = None\n"
        "from ingestq import errdefs\n"
        "from ingestq.jobs.config import Settings, open_store\n"
        f"env = {{'INGESTQ_STORE': 's3://b/p', 'INGESTQ_ROOT': {str(tmp_path)!r}}}\n"
        "s = Settings.from_env(env)\n"
        "try:\n"
        "    open_store(s)\n"
        "except errdefs.FailedPrecondition as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'ingestq[s3]'" in out.stdout
