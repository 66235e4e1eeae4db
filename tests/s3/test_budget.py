"""The disk budget on an S3 store (``max_bytes`` over a listing of the bucket): an
ingest of known size that does not fit is refused before anything is written, one of
unknown size stops at the cap keeping what it wrote (against SeaweedFS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.s3 import S3Location, S3Store
from ingestq.store import Descriptor, Digest
from ingestq.store.budget import Budget
from tests.servers.seaweed import S3Endpoint


@pytest.fixture
def location(s3_bucket: str, s3_prefix: str) -> S3Location:
    return S3Location(s3_bucket, s3_prefix)


def put(store: S3Store, data: bytes) -> Digest:
    digest = Digest.from_bytes(data)
    with store.writer(f"put-{digest.encoded[:12]}", Descriptor(digest, len(data))) as w:
        w.write(data)
        w.commit(len(data), digest)
    return digest


def test_used_counts_blobs_and_partial_ingests(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    store = S3Store(location, s3_endpoint.client(), tmp_path)
    assert store.used() == 0
    put(store, os.urandom(30_000))
    with store.writer("partial") as w:
        w.write(os.urandom(1_000))
    assert store.used() == 31_000


def test_an_ingest_of_known_size_that_does_not_fit_writes_nothing(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    store = S3Store(location, s3_endpoint.client(), tmp_path, budget=Budget(max_bytes=100_000))
    put(store, os.urandom(60_000))
    data = os.urandom(50_000)
    with pytest.raises(errdefs.ResourceExhausted, match=r"60000 bytes .* in use, 50000 more"):
        store.writer("big", Descriptor(Digest.from_bytes(data), len(data)))
    assert (store.list_statuses(), store.multipart_uploads()) == ([], [])
    small = os.urandom(40_000)
    assert store.exists(put(store, small))


def test_an_ingest_of_unknown_size_stops_at_the_cap_and_keeps_its_prefix(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    store = S3Store(location, s3_endpoint.client(), tmp_path, budget=Budget(max_bytes=50_000))
    put(store, os.urandom(10_000))
    data = os.urandom(60_000)
    with store.writer("unknown") as w:
        w.write(data[:30_000])
        with pytest.raises(errdefs.ResourceExhausted, match="reached at offset 40000"):
            w.write(data[30_000:])
    assert store.status("unknown").offset == 40_000
    roomy = S3Store(location, s3_endpoint.client(), tmp_path, budget=Budget(max_bytes=80_000))
    with roomy.writer("unknown") as w:  # resumed once the budget is raised
        assert w.status().offset == 40_000
        w.write(data[40_000:])
        info = w.commit(len(data), Digest.from_bytes(data))
    assert info.size == len(data)


def test_a_free_space_reserve_is_unimplemented(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    with pytest.raises(errdefs.Unimplemented, match="INGESTQ_MIN_FREE"):
        S3Store(location, s3_endpoint.client(), tmp_path, budget=Budget(min_free=1))
