"""``ingestq serve --store s3://...``: containerd's real ``ctr`` against a served S3
store (ingest, ls, get, active, label, leases, rm), its gRPC leases in the bucket
keeping content from a gc on another host, and the store contract through the gRPC
client over it."""

from __future__ import annotations

import hashlib
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from ingestq.api.client import GrpcWriter
from ingestq.api.proto.containerd.services.leases.v1 import leases_pb2 as le
from ingestq.api.server import ApiServer, Listen
from ingestq.s3 import S3Location, S3Store
from ingestq.s3 import gc as s3gc
from ingestq.store.testing import FakeRefLocker
from ingestq.store.testing.contract import ALL_CAPABILITIES, HOLDER, StoreContract, StoreFactory
from tests.api.conftest import ServerFactory, run_ctr, short_dir
from tests.api.test_client_contract import cancel_stream
from tests.api.wire import Leases, WriteStream, commit, md, stat
from tests.servers.seaweed import S3Endpoint
from tests.servers.util import wait_until

MiB = 1 << 20


def ok(done: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done


@pytest.mark.slow
def test_ctr_against_a_served_s3_store(
    serve_process_factory: ServerFactory,
    s3_endpoint: S3Endpoint,
    s3_bucket: str,
    s3_prefix: str,
    tmp_path: Path,
) -> None:
    url = f"s3://{s3_bucket}/{s3_prefix}"
    served = serve_process_factory("--store", url, env=s3_endpoint.env())
    data = random.Random(3).randbytes(12 * MiB + 5)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    ok(
        served.ctr(
            "content", "ingest", "--expected-digest", digest, "--expected-size",
            str(len(data)), "big", stdin_path=src,
        )
    )  # fmt: skip
    assert ok(served.ctr("content", "ls", "-q")).stdout.decode().split() == [digest]
    assert ok(served.ctr("content", "get", digest)).stdout == data
    ok(served.ctr("content", "label", digest, "team=infra"))
    assert "team=infra" in ok(served.ctr("content", "ls")).stdout.decode()
    assert ok(served.ctr("content", "active")).stdout.decode().splitlines()[1:] == []
    client = s3_endpoint.client()
    key = f"{s3_prefix}/blobs/sha256/{digest.split(':')[1]}"
    assert client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == data
    # ctr's leases live in the bucket.
    ok(served.ctr("leases", "create", "--id", "ctr-lease"))
    assert "ctr-lease" in ok(served.ctr("leases", "ls")).stdout.decode()
    lease_key = f"{s3_prefix}/leases/default/ctr-lease.json"
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix=f"{s3_prefix}/leases/")
    assert [o["Key"] for o in listed.get("Contents", ())] == [lease_key]
    ok(served.ctr("leases", "rm", "ctr-lease"))
    assert "ctr-lease" not in ok(served.ctr("leases", "ls")).stdout.decode()
    ok(served.ctr("content", "rm", digest))
    assert ok(served.ctr("content", "ls", "-q")).stdout == b""
    missing = served.ctr("content", "get", digest)
    assert missing.returncode != 0 and b"not found" in missing.stderr
    assert not client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_grpc_leases_of_a_served_s3_store_live_in_the_bucket_and_keep_content_from_gc(
    s3_endpoint: S3Endpoint, s3_bucket: str, s3_prefix: str, tmp_path: Path
) -> None:
    location = S3Location(s3_bucket, s3_prefix)
    locker = FakeRefLocker()
    served = S3Store(location, s3_endpoint.client(), tmp_path / "server", locker=locker)
    sockdir = short_dir()
    server = ApiServer(served, tmp_path / "server", max_workers=8, lock_wait=0.05)
    server.listen(Listen(unix=sockdir / "api.sock"))
    server.start()
    try:
        with grpc.insecure_channel(f"unix://{sockdir / 'api.sock'}") as ch:
            Leases(ch).Create(le.CreateRequest(id="pull-1"), metadata=md())
            for ref, data, lease in (("leased", b"leased", "pull-1"), ("bare", b"bare", None)):
                s = WriteStream(ch, md("default", lease=lease))
                s.send(stat(ref))
                s.send(commit(0, data=data, expected=sha(data)))
                s.half_close()
            listed = Leases(ch).ListResources(le.ListResourcesRequest(id="pull-1"), metadata=md())
            assert [(r.type, r.id) for r in listed.resources] == [("content", sha(b"leased"))]
            # gc on another host (its own root and client) sees the lease in the bucket.
            other = S3Store(location, s3_endpoint.client(), tmp_path / "gc-host", locker=locker)
            assert [x.id for x in other.leases().list("default")] == ["pull-1"]
            assert {d for d, _ in s3gc.collect(other).blobs} == {sha(b"bare")}
            assert other.exists(sha(b"leased"))
            Leases(ch).Delete(le.DeleteRequest(id="pull-1"), metadata=md())
            assert {d for d, _ in s3gc.collect(other).blobs} == {sha(b"leased")}
        assert not (tmp_path / "server" / "leases").exists()
    finally:
        server.stop(0)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class TestGrpcOverS3StoreContract(StoreContract):
    """The contract through containerd's API, served in process over an S3Store."""

    capabilities = ALL_CAPABILITIES - {HOLDER}
    locker: FakeRefLocker  # the served store's, set by store_factory

    @pytest.fixture
    def store_factory(
        self, s3_endpoint: S3Endpoint, s3_bucket: str, s3_prefix: str, tmp_path: Path
    ) -> Iterator[StoreFactory]:
        self.locker = FakeRefLocker()
        store = S3Store(
            S3Location(s3_bucket, s3_prefix),
            s3_endpoint.client(),
            tmp_path,
            locker=self.locker,
            part_size=5 * MiB,
        )
        sockdir = short_dir()
        server = ApiServer(store, tmp_path, max_workers=16, lock_wait=0.05)
        server.listen(Listen(unix=sockdir / "api.sock"))
        server.start()
        from ingestq.api.client import GrpcStore

        clients: list[GrpcStore] = []

        def make() -> GrpcStore:
            clients.append(GrpcStore(f"unix://{sockdir / 'api.sock'}", "default"))
            return clients[-1]

        yield make
        for c in clients:
            c.close()
        server.stop(0)

    def crash(self, writer: object) -> None:
        """Cancel the stream, then wait until the server has closed its writer: closing
        an S3 writer stores its tail and record (requests to the server), which may
        outlast the 50 ms the server retries a locked ref for when the next stream
        opens it (so a loaded machine saw ``ref ... locked``)."""
        assert isinstance(writer, GrpcWriter)
        cancel_stream(writer)
        wait_until(lambda: self.locker.holder(writer.ref) is None, 30, "server closes the writer")


__all__ = ["run_ctr"]
