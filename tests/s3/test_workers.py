"""Celery workers on an S3 store (``INGESTQ_STORE=s3://...``), two of them sharing
nothing but Redis and the bucket (each its own root and lock directory): N jobs for one
digest fetch it once, a pool process killed mid-ingest is resumed from the parts it had
uploaded, and a whole pull lands in the bucket, its image recorded in the bucket's
index.json."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from ingestq import errdefs
from ingestq.s3 import S3Location, S3Store
from ingestq.s3 import gc as s3gc
from ingestq.s3.store import DEFAULT_PART_SIZE
from ingestq.store import Descriptor, Digest
from ingestq.store.helpers import write_blob
from ingestq.tasks.client import enqueue_ingest, enqueue_pull
from ingestq.tasks.lease import RedisLeaseLocker
from tests.s3.test_s3_store import vouched_parts
from tests.servers import oci
from tests.servers.registry import Registry
from tests.servers.s3throttle import ThrottlingS3
from tests.servers.seaweed import S3Endpoint
from tests.servers.util import wait_until
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.conftest import Cluster, ClusterFactory
from tests.tasks.registry_helpers import FrontFactory
from tests.tasks.registry_helpers import fronts_fixture as fronts_fixture

pytestmark = pytest.mark.slow

MiB = 1 << 20


@pytest.fixture
def location(s3_bucket: str, s3_prefix: str) -> S3Location:
    return S3Location(s3_bucket, s3_prefix)


@pytest.fixture
def s3_cluster(
    cluster_factory: ClusterFactory,
    redis_url: str,
    tmp_path: Path,
    s3_endpoint: S3Endpoint,
    location: S3Location,
) -> Cluster:
    """A producer whose workers keep their content in the bucket."""
    (tmp_path / "files").mkdir()
    return cluster_factory(
        redis_url, tmp_path / "producer", INGESTQ_STORE=str(location), **s3_endpoint.env()
    )


def start_host(cluster: Cluster, tmp_path: Path, name: str) -> Any:
    """A worker with a root and lock directory of its own, as on another host."""
    root = tmp_path / name
    return cluster.start_worker(
        env={"INGESTQ_ROOT": str(root), "INGESTQ_LOCK_DIR": str(root / "locks")}
    )


def blob_in_bucket(endpoint: S3Endpoint, location: S3Location, digest: str) -> bytes:
    key = location.key("blobs", "sha256", digest.split(":")[1])
    body: bytes = endpoint.client().get_object(Bucket=location.bucket, Key=key)["Body"].read()
    return body


def test_jobs_for_one_digest_on_two_hosts_fetch_it_once(
    s3_cluster: Cluster,
    blob_server: BlobServer,
    s3_endpoint: S3Endpoint,
    location: S3Location,
    tmp_path: Path,
) -> None:
    data = os.urandom(3 * MiB)
    blob = Behaviour(data=data, gate_offset=1 * MiB)
    url = blob_server.add("/one", blob)
    start_host(s3_cluster, tmp_path, "host-a")
    start_host(s3_cluster, tmp_path, "host-b")
    jobs = [
        enqueue_ingest(url, digest=blob.digest, size=len(data), client=s3_cluster.client)
        for _ in range(20)
    ]
    assert blob.gate_reached.wait(30), s3_cluster.logs()
    blob.gate.set()
    infos = [j.wait(timeout=90) for j in jobs]
    assert {str(i.digest) for i in infos} == {blob.digest}
    assert [r.status for r in blob_server.requests_for("/one")] == [200]
    assert blob_in_bucket(s3_endpoint, location, blob.digest) == data
    assert not (tmp_path / "host-a" / "blobs" / "sha256").exists()
    uploads = s3_endpoint.client().list_multipart_uploads(Bucket=location.bucket)
    assert not uploads.get("Uploads")


def test_a_killed_pool_process_resumes_from_its_uploaded_parts(
    s3_cluster: Cluster,
    blob_server: BlobServer,
    s3_endpoint: S3Endpoint,
    location: S3Location,
    tmp_path: Path,
    redis_url: str,
) -> None:
    parts = 2 * DEFAULT_PART_SIZE
    data = os.urandom(parts + 4 * MiB)
    blob = Behaviour(data=data, gate_offset=parts + 1 * MiB)  # 1 MiB buffered at the kill
    url = blob_server.add("/big", blob)
    worker = start_host(s3_cluster, tmp_path, "host-a")
    job = enqueue_ingest(url, digest=blob.digest, size=len(data), client=s3_cluster.client)
    assert blob.gate_reached.wait(30), s3_cluster.logs()
    watcher = S3Store(
        location, s3_endpoint.client(), tmp_path / "watcher", locker=RedisLeaseLocker(redis_url)
    )
    client = s3_endpoint.client()
    wait_until(
        lambda: vouched_parts(client, location, job.ref) == (2, 0),
        30,
        "the worker's record vouches for two uploaded parts",
    )
    status = watcher.status(job.ref)
    assert status.holder is not None and status.holder.pid in worker.children()
    os.kill(status.holder.pid, signal.SIGKILL)
    info = s3_cluster.client.job(job.id).wait(timeout=90)
    assert str(info.digest) == blob.digest
    blob.gate.set()
    wait_until(lambda: len(blob_server.requests_for("/big")) == 2, 10, "both requests logged")
    second = next(r for r in blob_server.requests_for("/big") if r.range is not None)
    assert second.range == f"bytes={parts}-" and second.status == 206
    meta = s3_cluster.client.meta(job.id)
    assert meta is not None and meta["result"]["resumed_from"] == parts
    assert blob_in_bucket(s3_endpoint, location, blob.digest) == data
    uploads = s3_endpoint.client().list_multipart_uploads(Bucket=location.bucket)
    assert not uploads.get("Uploads")


def test_a_pull_on_two_hosts_lands_in_the_bucket(
    s3_cluster: Cluster,
    registry: Registry,
    s3_endpoint: S3Endpoint,
    location: S3Location,
    tmp_path: Path,
) -> None:
    layers = [os.urandom(MiB + i) for i in range(4)]
    image = oci.build_image(layers)
    oci.push_built_image(registry, "app", image, "v1")
    start_host(s3_cluster, tmp_path, "host-a")
    start_host(s3_cluster, tmp_path, "host-b")
    name = f"{registry.host}/app:v1"
    result = enqueue_pull(name, client=s3_cluster.client).wait(timeout=120)
    assert str(result.target.digest) == image.digest
    for d, data in zip(image.layer_descriptors, layers, strict=True):
        assert blob_in_bucket(s3_endpoint, location, str(d.digest)) == data
    store = S3Store(location, s3_endpoint.client(), tmp_path / "reader")
    assert store.image_index().get(name).digest == result.recorded.digest
    for host in ("host-a", "host-b"):
        assert not (tmp_path / host / "index.json").exists()
        assert not (tmp_path / host / "blobs").exists()
    uploads = s3_endpoint.client().list_multipart_uploads(Bucket=location.bucket)
    assert not uploads.get("Uploads")


def test_a_gc_without_the_workers_redis_refuses_while_their_pull_runs(
    s3_cluster: Cluster,
    registry: Registry,
    fronts: FrontFactory,
    s3_endpoint: S3Endpoint,
    location: S3Location,
    tmp_path: Path,
    redis_url: str,
) -> None:
    front = fronts(registry.url)
    layers = [os.urandom(2 * MiB) for _ in range(2)]
    image = oci.build_image(layers)
    oci.push_built_image(registry, "app", image, "v1")
    held = image.layer_descriptors[0].digest
    gate = front.rule(rf"^GET /v2/[\w/]+/blobs/{held}", gate_offset=MiB)
    start_host(s3_cluster, tmp_path, "host-a")
    job = enqueue_pull(f"{front.host}/app:v1", client=s3_cluster.client)
    assert gate.gate_reached.wait(30), s3_cluster.logs()

    lonely = S3Store(location, s3_endpoint.client(), tmp_path / "host-c")  # its own locks
    data = b"nobody's"
    desc = Descriptor(Digest.from_bytes(data), len(data))
    garbage = write_blob(lonely, "garbage", io.BytesIO(data), desc).digest
    with pytest.raises(errdefs.FailedPrecondition, match="pull-") as exc:
        s3gc.collect(lonely)
    assert "redis-db:" in str(exc.value)  # the pull names the workers' Redis
    assert lonely.exists(garbage)

    shared = S3Store(
        location, s3_endpoint.client(), tmp_path / "host-d", locker=RedisLeaseLocker(redis_url)
    )
    assert {d for d, _ in s3gc.collect(shared).blobs} == {str(garbage)}
    gate.gate.set()
    result = job.wait(timeout=120)
    assert str(result.target.digest) == image.digest
    for d, data in zip(image.layer_descriptors, layers, strict=True):
        assert blob_in_bucket(s3_endpoint, location, str(d.digest)) == data


def test_a_batched_job_whose_store_cannot_tell_its_path_runs_as_its_own_message(
    cluster_factory: ClusterFactory,
    redis_url: str,
    tmp_path: Path,
    s3_endpoint: S3Endpoint,
    location: S3Location,
) -> None:
    """The bucket throttles (503 SlowDown, past boto3's retries) every read of the first
    job's ingest record, which tells the batch whether the job takes the small path:
    that job leaves the batch, and succeeds as a message of its own once the bucket
    answers again; its neighbour runs in the batch."""
    files = tmp_path / "files"
    files.mkdir()
    data = [os.urandom(4096), os.urandom(4096)]
    paths = [files / "a", files / "b"]
    for path, content in zip(paths, data, strict=True):
        path.write_bytes(content)
    first_record = location.ingest(f"blob-{Digest.from_bytes(data[0])}")

    def first_record_read(method: str, path: str) -> bool:
        return method == "GET" and path.split("?")[0].endswith(first_record)

    with ThrottlingS3(s3_endpoint.url, first_record_read) as front:
        env = {**s3_endpoint.env(), "AWS_ENDPOINT_URL": front.url}
        cluster = cluster_factory(redis_url, tmp_path / "producer", INGESTQ_STORE=str(location),
                                  INGESTQ_FILE_ROOTS=str(files), **env)  # fmt: skip
        jobs = enqueue_many_files(cluster, paths, data)
        assert jobs[0].ref == f"blob-{Digest.from_bytes(data[0])}"
        worker = start_host(cluster, tmp_path, "host-a")
        own = f"ingestq.ingest[{jobs[0].id}] received"
        wait_until(lambda: own in worker.log_text(), 120, "the first job is handed on")
        front.stop()
        for job, content in zip(jobs, data, strict=True):
            assert job.wait(timeout=120).digest == Digest.from_bytes(content), cluster.logs()
        assert front.throttled > 1  # boto3's own retries were throttled too
    log = worker.log_text()
    assert "{'ended': 1, 'left': 1}" in log
    assert f"ingestq.ingest[{jobs[1].id}]" not in log  # ran in the batch
    for content in data:
        assert blob_in_bucket(s3_endpoint, location, str(Digest.from_bytes(content))) == content


def enqueue_many_files(cluster: Cluster, paths: list[Path], data: list[bytes]) -> list[Any]:
    """``enqueue_many`` of local files with their digest and size (so they are batched)."""
    from ingestq.tasks.client import enqueue_many

    requests = [
        {"source": str(p), "digest": str(Digest.from_bytes(d)), "size": len(d)}
        for p, d in zip(paths, data, strict=True)
    ]
    return list(enqueue_many(requests, client=cluster.client))
