"""``ingestq serve --store s3://...``: containerd's real ``ctr`` against a served S3
store (ingest, ls, get, active, label, rm), and the store contract through the gRPC
client over it."""

from __future__ import annotations

import hashlib
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestq.api.server import ApiServer, Listen
from ingestq.s3 import S3Location, S3Store
from ingestq.store.testing import FakeRefLocker
from ingestq.store.testing.contract import ALL_CAPABILITIES, HOLDER, StoreContract, StoreFactory
from tests.api.conftest import ServerFactory, run_ctr, short_dir
from tests.api.test_client_contract import cancel_stream
from tests.servers.seaweed import S3Endpoint

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
    ok(served.ctr("content", "rm", digest))
    assert ok(served.ctr("content", "ls", "-q")).stdout == b""
    missing = served.ctr("content", "get", digest)
    assert missing.returncode != 0 and b"not found" in missing.stderr
    assert not client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


class TestGrpcOverS3StoreContract(StoreContract):
    """The contract through containerd's API, served in process over an S3Store."""

    capabilities = ALL_CAPABILITIES - {HOLDER}

    @pytest.fixture
    def store_factory(
        self, s3_endpoint: S3Endpoint, s3_bucket: str, s3_prefix: str, tmp_path: Path
    ) -> Iterator[StoreFactory]:
        store = S3Store(
            S3Location(s3_bucket, s3_prefix),
            s3_endpoint.client(),
            tmp_path,
            locker=FakeRefLocker(),
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
        cancel_stream(writer)  # type: ignore[arg-type]


__all__ = ["run_ctr"]
