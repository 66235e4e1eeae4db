"""The store contract (:mod:`ingestq.store.testing.contract`) run against S3Store on
Debian's Ceph ``radosgw`` (16 "pacific"), a stricter and older S3 server than
SeaweedFS, marked slow (the throwaway cluster takes seconds to start).

What this radosgw does with the conditional headers the store sends (probed with
boto3; SeaweedFS honours all of them):

* PUT ``If-None-Match: *``: honoured (412 when the key exists).
* PUT ``If-Match``: honoured, but compared byte for byte with the stored ETag, which
  is unquoted: the quoted spelling (RFC 7232's, what boto3 users usually send) never
  matches, not even the current ETag. The store therefore sends it unquoted, which
  SeaweedFS (and S3) accept too.
* CompleteMultipartUpload ``If-None-Match: *`` and ``If-Match``: ignored (the object
  is replaced).
* CopyObject ``If-None-Match: *``: ignored (the destination is replaced).

So the store runs with ``conditional_writes=False`` here: each publish HEADs the key
first (a duplicate write of a content-addressed key is harmless). Metadata, image
records, leases and the gc lock use PUT with ``If-Match`` / ``If-None-Match: *``,
which this radosgw honours.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ingestq import errdefs
from ingestq.s3 import S3Location, S3Store
from ingestq.s3.bucket import Bucket
from ingestq.s3.store import MIN_PART_SIZE
from ingestq.store.testing import FakeRefLocker
from ingestq.store.testing.contract import ALL_CAPABILITIES, PUT, StoreContract, StoreFactory
from tests.s3.test_contract import assert_no_stray_uploads
from tests.servers.radosgw import RadosgwServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rgw_bucket(radosgw: RadosgwServer) -> str:
    """A fresh bucket on the session radosgw for this module."""
    return radosgw.endpoint.new_bucket()


class TestS3StoreOnRadosgwContract(StoreContract):
    """S3's minimum part size, so the contract's larger blobs span several parts."""

    capabilities = ALL_CAPABILITIES | {PUT}

    @pytest.fixture
    def store_factory(
        self, radosgw: RadosgwServer, rgw_bucket: str, s3_prefix: str, tmp_path: Path
    ) -> Iterator[StoreFactory]:
        locker = FakeRefLocker()
        client = radosgw.endpoint.client()
        location = S3Location(rgw_bucket, s3_prefix)
        yield lambda: S3Store(
            location,
            client,
            tmp_path,
            locker=locker,
            part_size=MIN_PART_SIZE,
            conditional_writes=False,
        )
        assert_no_stray_uploads(client, location)


# The server's behaviour the module docstring describes (and the store relies on). ----


@pytest.fixture
def client(radosgw: RadosgwServer) -> Any:
    """A boto3 client of the session radosgw."""
    return radosgw.endpoint.client()


@pytest.fixture
def key() -> str:
    """A fresh key."""
    return f"k-{uuid.uuid4().hex[:12]}"


def put_status(client: Any, bucket: str, key: str, body: bytes, **headers: str) -> int:
    """The HTTP status of a PUT of ``body`` with the boto3 conditional ``headers``."""
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, **headers)
    except ClientError as e:
        return int(e.response["ResponseMetadata"]["HTTPStatusCode"])
    return 200


def body_of(client: Any, bucket: str, key: str) -> bytes:
    """The object's bytes."""
    return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_put_honours_if_none_match(client: Any, rgw_bucket: str, key: str) -> None:
    assert put_status(client, rgw_bucket, key, b"1", IfNoneMatch="*") == 200
    assert put_status(client, rgw_bucket, key, b"2", IfNoneMatch="*") == 412
    assert body_of(client, rgw_bucket, key) == b"1"


def test_put_honours_if_match_only_with_an_unquoted_etag(
    client: Any, rgw_bucket: str, key: str
) -> None:
    etag = client.put_object(Bucket=rgw_bucket, Key=key, Body=b"1")["ETag"]
    assert etag.startswith('"')
    assert put_status(client, rgw_bucket, key, b"2", IfMatch=etag) == 412  # the current one
    assert body_of(client, rgw_bucket, key) == b"1"
    bare = etag.strip('"')
    assert put_status(client, rgw_bucket, key, b"3", IfMatch=bare) == 200
    assert body_of(client, rgw_bucket, key) == b"3"
    assert put_status(client, rgw_bucket, key, b"4", IfMatch=bare) == 412  # now stale
    assert body_of(client, rgw_bucket, key) == b"3"


def test_the_stores_conditional_change_works(client: Any, rgw_bucket: str, key: str) -> None:
    """:meth:`Bucket.change` (metadata, image records, leases, gc lock) creates with
    If-None-Match and updates with If-Match; a stale ETag is FailedPrecondition."""
    bucket = Bucket(client, rgw_bucket)
    assert bucket.change(key, lambda found: b"1", "test") == b"1"
    assert bucket.change(key, lambda found: found[0] + b"2" if found else None, "test") == b"12"
    stale = bucket.put(key, b"x")
    bucket.put(key, b"y", if_match=stale)
    with pytest.raises(errdefs.FailedPrecondition):
        bucket.put(key, b"z", if_match=stale)
    assert body_of(client, rgw_bucket, key) == b"y"


def test_complete_multipart_upload_ignores_if_none_match(
    client: Any, rgw_bucket: str, key: str
) -> None:
    client.put_object(Bucket=rgw_bucket, Key=key, Body=b"old")
    upload = client.create_multipart_upload(Bucket=rgw_bucket, Key=key)["UploadId"]
    part = client.upload_part(
        Bucket=rgw_bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"new"
    )
    client.complete_multipart_upload(
        Bucket=rgw_bucket,
        Key=key,
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        IfNoneMatch="*",
    )
    assert body_of(client, rgw_bucket, key) == b"new"


def test_copy_object_ignores_if_none_match(client: Any, rgw_bucket: str, key: str) -> None:
    client.put_object(Bucket=rgw_bucket, Key=key, Body=b"old")
    client.put_object(Bucket=rgw_bucket, Key=key + "-src", Body=b"new")
    source = {"Bucket": rgw_bucket, "Key": key + "-src"}
    client.copy_object(Bucket=rgw_bucket, Key=key, CopySource=source, IfNoneMatch="*")
    assert body_of(client, rgw_bucket, key) == b"new"
