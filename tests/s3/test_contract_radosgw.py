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

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestq.s3 import S3Location, S3Store
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
