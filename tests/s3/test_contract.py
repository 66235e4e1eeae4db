"""The store contract (:mod:`ingestq.store.testing.contract`) run against S3Store on a
real SeaweedFS: with the contract's fake locker and S3's minimum part size (so the
contract's larger blobs span several multipart parts), with the default part size (its
blobs all take one PUT), and with a real Redis lease locker and client per handle (as
on separate hosts). Each test has its own key prefix in the module's bucket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingestq.s3 import S3Location, S3Store
from ingestq.s3.store import DEFAULT_PART_SIZE, MIN_PART_SIZE
from ingestq.store.testing import FakeRefLocker
from ingestq.store.testing.contract import ALL_CAPABILITIES, PUT, StoreContract, StoreFactory
from ingestq.tasks.lease import RedisLeaseLocker
from tests.servers.seaweed import S3Endpoint


class TestS3StoreContract(StoreContract):
    capabilities = ALL_CAPABILITIES | {PUT}

    @pytest.fixture(params=[MIN_PART_SIZE, DEFAULT_PART_SIZE], ids=["5MiB-parts", "8MiB-parts"])
    def store_factory(
        self,
        s3_endpoint: S3Endpoint,
        s3_bucket: str,
        s3_prefix: str,
        tmp_path: Path,
        request: pytest.FixtureRequest,
    ) -> Iterator[StoreFactory]:
        locker = FakeRefLocker()
        client = s3_endpoint.client()
        location = S3Location(s3_bucket, s3_prefix)
        yield lambda: S3Store(location, client, tmp_path, locker=locker, part_size=request.param)
        assert_no_stray_uploads(client, location)


class TestS3StoreWithRedisLeasesContract(StoreContract):
    """Every handle has its own client and Redis lease locker, as another host would."""

    capabilities = ALL_CAPABILITIES | {PUT}

    @pytest.fixture
    def store_factory(
        self,
        s3_endpoint: S3Endpoint,
        s3_bucket: str,
        s3_prefix: str,
        tmp_path: Path,
        redis_url: str,
    ) -> Iterator[StoreFactory]:
        location = S3Location(s3_bucket, s3_prefix)
        yield lambda: S3Store(
            location,
            s3_endpoint.client(),
            tmp_path,
            locker=RedisLeaseLocker(redis_url, ttl=10.0),
            part_size=MIN_PART_SIZE,
        )
        assert_no_stray_uploads(s3_endpoint.client(), location)


def assert_no_stray_uploads(client: Any, location: S3Location) -> None:
    """Every multipart upload left under the prefix belongs to an ingest that is still
    recorded (one the test left unfinished); committed and aborted ones left none."""
    uploads = (
        client.list_multipart_uploads(Bucket=location.bucket, Prefix=location.key("")).get(
            "Uploads"
        )
        or []
    )
    store = S3Store(location, client, "/nonexistent")
    recorded = {st.ref: st for st in store.list_statuses()}
    assert len(uploads) <= len(recorded), (uploads, sorted(recorded))
