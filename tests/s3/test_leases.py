"""Leases in the bucket (:mod:`ingestq.s3.leases`) on a real SeaweedFS: the lease
contract (each handle with its own client, as another host), one object per lease,
concurrent adds from several processes that lose nothing, and an add of content that
waits out a gc holding that blob's lock."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.s3 import S3Location, S3Store
from ingestq.s3.bloblock import blob_lock_ref
from ingestq.store.digest import Digest
from ingestq.store.testing import FakeRefLocker
from ingestq.store.testing.leases_contract import LeasesContract, LeasesFactory
from tests.s3 import procs
from tests.servers.seaweed import S3Endpoint
from tests.servers.util import wait_until

CTX = multiprocessing.get_context("spawn")


class TestS3LeasesContract(LeasesContract):
    @pytest.fixture
    def leases_factory(
        self, s3_endpoint: S3Endpoint, s3_bucket: str, s3_prefix: str, tmp_path: Path
    ) -> LeasesFactory:
        location = S3Location(s3_bucket, s3_prefix)
        locker = FakeRefLocker()
        return lambda: S3Store(location, s3_endpoint.client(), tmp_path, locker=locker).leases()


@pytest.fixture
def store(s3_endpoint: S3Endpoint, s3_bucket: str, s3_prefix: str, tmp_path: Path) -> S3Store:
    return S3Store(
        S3Location(s3_bucket, s3_prefix), s3_endpoint.client(), tmp_path, locker=FakeRefLocker()
    )


def test_one_object_per_lease_under_the_prefix(store: S3Store) -> None:
    leases = store.leases()
    leases.create("default", "pull/1", {"k": "v"})
    leases.add_resource("default", "pull/1", "ingests", "layer")
    keys = [o.key for o in store.bucket.list_objects(store.location.key("leases") + "/")]
    assert keys == [store.location.key("leases", "default", "pull%2F1.json")]
    body = json.loads(store.bucket.get(keys[0])[0])
    assert (body["id"], body["labels"], body["resources"]) == (
        "pull/1",
        {"k": "v"},
        [["ingests", "layer"]],
    )
    store.bucket.put(keys[0], b"{not json")
    with pytest.raises(errdefs.DataLoss):
        leases.get("default", "pull/1")
    with pytest.raises(errdefs.DataLoss):
        leases.list("default")


def test_concurrent_adds_from_processes_lose_nothing(
    s3_endpoint: S3Endpoint, s3_bucket: str, s3_prefix: str, store: S3Store, tmp_path: Path
) -> None:
    store.leases().create("ingestq", "shared", {})
    url = f"s3://{s3_bucket}/{s3_prefix}"
    n, each = 4, 10
    start = CTX.Barrier(n)
    children = [
        CTX.Process(
            target=procs.add_resources,
            args=(url, str(tmp_path / f"host-{i}"), s3_endpoint.env(), "shared", i, each, start),
        )
        for i in range(n)
    ]
    for p in children:
        p.start()
    for p in children:
        p.join(procs.WAIT)
    assert [p.exitcode for p in children] == [0] * n
    got = set(store.leases().resources("ingestq", "shared"))
    assert got == {("ingests", f"p{i}-{j}") for i in range(n) for j in range(each)}


def test_adding_content_waits_out_a_held_blob_lock(store: S3Store) -> None:
    assert isinstance(store.locker, FakeRefLocker)
    leases = store.leases()
    leases.create("default", "L", {})
    digest = Digest.from_bytes(b"some blob")
    held = store.locker.hold(blob_lock_ref(digest), "a gc")
    done = threading.Event()

    def add() -> None:
        leases.add_resource("default", "L", "content", str(digest))
        done.set()

    t = threading.Thread(target=add)
    t.start()
    # The resource is recorded at once; the call returns only once the lock is free.
    wait_until(lambda: ("content", str(digest)) in leases.resources("default", "L"), 30, "the add")
    assert not done.is_set()
    held.release()
    t.join(60)
    assert done.is_set()
    # An ingest resource or a digest already on the lease takes no blob lock.
    held = store.locker.hold(blob_lock_ref(digest), "a gc")
    leases.add_resources("default", "L", [("content", str(digest)), ("ingests", "x")])
    held.release()
