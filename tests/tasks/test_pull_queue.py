"""Queued pulls on real Celery worker processes and a real registry: children spread over
the workers, one worker slot is enough (no deadlock), shared layers of concurrent pulls
served once, a worker killed mid-layer resumes, errors keep their kind, cancel."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ingestq import errdefs
from ingestq.images.status import BlobState
from ingestq.jobs.api import JobState
from ingestq.jobs.pullstatus import PullStatus
from ingestq.store.digest import Digest
from ingestq.store.helpers import write_blob
from ingestq.store.images import ImageIndex
from ingestq.store.local import LocalStore
from ingestq.store.values import Descriptor
from ingestq.tasks.client import enqueue_pull
from ingestq.tasks.queue.pull import QueuePullJob
from tests.images.helpers import lying_image, serve_image
from tests.servers import oci
from tests.servers.registry import Registry
from tests.servers.util import wait_until
from tests.tasks.blobserver import BlobServer
from tests.tasks.conftest import Cluster, ClusterFactory
from tests.tasks.registry_helpers import FrontFactory, MiB, shutdown_all
from tests.tasks.registry_helpers import fronts_fixture as fronts_fixture


@pytest.fixture
def cluster(cluster: Cluster) -> Iterator[Cluster]:
    """The conftest's cluster, whose workers are all asked to stop at once at the end
    (its teardown stops them one by one, seconds each)."""
    yield cluster
    shutdown_all(cluster.workers)


def _layer_path(digest: str) -> str:
    return rf"^GET /v2/[\w/]+/blobs/{digest}"


def test_children_spread_over_two_workers_and_status_aggregates(
    cluster: Cluster, registry: Registry, fronts: FrontFactory
) -> None:
    front = fronts(registry.url)
    layers = [os.urandom(2 * MiB) for _ in range(4)]  # over the small-blob path
    image = oci.build_image(layers)
    oci.push_built_image(registry, "app", image, "v1")
    gated = image.layer_descriptors[0].digest
    gate = front.rule(_layer_path(gated), gate_offset=MiB)
    cluster.start_worker()
    cluster.start_worker()
    job = enqueue_pull(f"{front.host}/app:v1", client=cluster.client)
    assert isinstance(job, QueuePullJob)
    assert gate.gate_reached.wait(30), cluster.logs()

    # One worker is held inside layer 0; the others must be fetched by the other worker.
    def all_but_the_gated_one() -> PullStatus | None:
        s = job.status()
        done = sum(b.state is BlobState.DONE for b in s.blobs)
        ok = s.blobs and done == len(s.blobs) - 1 and s.bytes_done == s.bytes_total - MiB
        return s if ok else None

    status = wait_until(
        all_but_the_gated_one, 60, "every blob but the gated layer is done, it half way"
    )
    assert status is not None
    held = {b.ref: b for b in status.blobs}[f"layer-{gated}"]
    assert held.state is BlobState.DOWNLOADING and held.offset == MiB
    assert status.bytes_total == image.descriptor.size + sum(
        d.size for d in (image.config_descriptor, *image.layer_descriptors)
    )
    assert status.bytes_done == status.bytes_total - MiB
    assert job.state in (JobState.STARTED, JobState.RETRYING)
    gate.gate.set()
    result = job.wait(timeout=60)
    assert str(result.target.digest) == image.digest
    plan = job.plan()
    assert plan is not None
    workers = {
        (cluster.client.meta(c.job_id) or {}).get("worker") for c in plan.children if c.job_id
    }
    assert workers == {w.name for w in cluster.workers}
    assert job.status().bytes_done == job.status().bytes_total
    assert ImageIndex(cluster.root).get(f"{front.host}/app:v1").digest == Digest.parse(image.digest)
    meta = cluster.client.meta(job.id)
    assert meta is not None and meta["status"] == "SUCCESS"
    assert cluster.client.job(job.id).wait(0).digest == Digest.parse(image.digest)
    # Every child was counted off the pull's record (the last one started finalize).
    assert cluster.client.records.get(job.id)["pending"] == "0"


def test_one_worker_slot_is_enough_for_a_pull_of_many_layers(
    cluster: Cluster, registry: Registry
) -> None:
    layers = [os.urandom(64 * 1024) for _ in range(8)]
    image = oci.build_image(layers)
    oci.push_built_image(registry, "many", image, "v1")
    cluster.start_worker(concurrency=1)
    job = enqueue_pull(f"{registry.host}/many:v1", client=cluster.client)
    result = job.wait(timeout=60)
    assert len(result.children) == 9 and all(c.fetched for c in result.children)
    store = LocalStore(cluster.root, fsync=False)
    for d, data in zip(image.layer_descriptors, layers, strict=True):
        assert (cluster.root / "blobs" / "sha256" / d.digest[7:]).read_bytes() == data
        assert (
            store.info(Digest.parse(d.digest)).labels[
                f"containerd.io/distribution.source.{registry.host}"
            ]
            == "many"
        )


def test_two_images_sharing_layers_pulled_at_once_on_two_workers_fetch_shared_once(
    cluster: Cluster, registry: Registry, fronts: FrontFactory
) -> None:
    front = fronts(registry.url)
    shared = [os.urandom(2 * MiB), os.urandom(MiB), os.urandom(MiB)]
    one = oci.build_image([*shared, os.urandom(4096)])
    two = oci.build_image([*shared, os.urandom(8192)])
    oci.push_built_image(registry, "one", one, "v1")
    oci.push_built_image(registry, "two", two, "v1")
    big = one.layer_descriptors[0].digest
    gate = front.rule(_layer_path(big), gate_offset=MiB)
    cluster.start_worker()
    cluster.start_worker()
    first = enqueue_pull(f"{front.host}/one:v1", client=cluster.client)
    second = enqueue_pull(f"{front.host}/two:v1", client=cluster.client)
    assert gate.gate_reached.wait(30), cluster.logs()
    assert isinstance(second, QueuePullJob)
    # The second pull's job for the big layer finds it locked and waits (RETRY).
    wait_until(
        lambda: any(
            b.ref == f"layer-{big}" and b.reason and "locked" in b.reason
            for b in second.status().blobs + first.status().blobs
        ),
        60,
        "a child of the other pull waits on the locked ref",
    )
    gate.gate.set()
    results = [first.wait(timeout=90), second.wait(timeout=90)]
    for data in shared:
        digest = str(Digest.from_bytes(data))
        served = [r for r in front.requests("GET", digest) if r.status in (200, 206)]
        assert len(served) == 1, (digest, served)
        assert registry.count_blob_gets(digest, statuses={200, 206}) == 1
    fetched = [c.digest for r in results for c in r.children if c.fetched]
    for data in shared:
        assert fetched.count(Digest.from_bytes(data)) == 1
    names = dict(ImageIndex(cluster.root).list())
    assert names[f"{front.host}/one:v1"].digest == Digest.parse(one.digest)
    assert names[f"{front.host}/two:v1"].digest == Digest.parse(two.digest)


def test_a_worker_killed_mid_layer_is_replaced_and_the_layer_resumes(
    cluster_factory: ClusterFactory,
    redis_url: str,
    store_root: Path,
    registry: Registry,
    fronts: FrontFactory,
) -> None:
    cluster = cluster_factory(
        redis_url, store_root, INGESTQ_VISIBILITY_TIMEOUT="4", INGESTQ_RESTORE_INTERVAL="1"
    )
    front = fronts(registry.url)
    data = os.urandom(8 * MiB)
    image = oci.build_image([data, os.urandom(1000)])
    oci.push_built_image(registry, "big", image, "v1")
    layer = image.layer_descriptors[0].digest
    gate = front.rule(_layer_path(layer), gate_offset=4 * MiB)
    doomed = cluster.start_worker()
    job = enqueue_pull(f"{front.host}/big:v1", client=cluster.client)
    assert gate.gate_reached.wait(30), cluster.logs()
    store = LocalStore(cluster.root, fsync=False)
    wait_until(
        lambda: (s := store.status(f"layer-{layer}")).offset == 4 * MiB and s.holder,
        30,
        "the worker wrote 4 MiB of the layer",
    )
    cluster.start_worker()
    os.killpg(doomed.pid, signal.SIGKILL)
    gate.gate.set()  # the killed worker's connection is gone; later requests pass
    result = job.wait(timeout=90)
    child = {c.ref: c for c in result.children}[f"layer-{layer}"]
    assert child.resumed_from == 4 * MiB
    assert child.bytes_fetched == 4 * MiB
    gets = front.requests("GET", layer)
    assert [r.headers.get("range") for r in gets] == [None, f"bytes={4 * MiB}-"]
    assert gets[1].status == 206
    assert (cluster.root / "blobs" / "sha256" / layer[7:]).read_bytes() == data
    assert ImageIndex(cluster.root).get(f"{front.host}/big:v1").digest == Digest.parse(image.digest)


def test_errors_keep_their_kind_through_the_queue(cluster: Cluster, registry: Registry) -> None:
    cluster.start_worker()
    with pytest.raises(errdefs.NotFound, match="MANIFEST_UNKNOWN"):
        enqueue_pull(f"{registry.host}/nothing:v1", client=cluster.client).wait(timeout=60)
    image = oci.build_image([os.urandom(100), os.urandom(200)])
    oci.push_built_image(registry, "broken", image, "v1")
    lost = image.layer_descriptors[0].digest
    import httpx

    assert httpx.delete(f"{registry.url}/v2/broken/blobs/{lost}").status_code == 202
    job = enqueue_pull(f"{registry.host}/broken:v1", client=cluster.client)
    with pytest.raises(errdefs.NotFound) as err:
        job.wait(timeout=60)
    assert str(err.value).startswith(f"pull {registry.host}/broken:v1: layer-{lost}: ")
    assert job.state is JobState.FAILED
    record = cluster.client.records.get(job.id)
    assert '"code": 5' in record["error"] or '"code":5' in record["error"]


def test_cancel_while_a_layer_downloads_fails_the_pull_and_records_nothing(
    cluster: Cluster, registry: Registry, fronts: FrontFactory
) -> None:
    front = fronts(registry.url)
    image = oci.build_image([os.urandom(4 * MiB)])
    oci.push_built_image(registry, "slow", image, "v1")
    layer = image.layer_descriptors[0].digest
    gate = front.rule(_layer_path(layer), gate_offset=MiB)
    cluster.start_worker()
    cluster.start_worker()
    job = enqueue_pull(f"{front.host}/slow:v1", client=cluster.client)
    assert gate.gate_reached.wait(30), cluster.logs()
    job.cancel()
    gate.gate.set()
    with pytest.raises(errdefs.Canceled):
        job.wait(timeout=60)
    assert job.state is JobState.CANCELED or job.state is JobState.FAILED
    assert isinstance(job, QueuePullJob)
    plan = job.plan()
    assert plan is not None and plan.children[0].job_id
    assert cluster.client.records.cancel_requested(plan.children[0].job_id)
    assert f"{front.host}/slow:v1" not in dict(ImageIndex(cluster.root).list())


def test_cancel_while_planning_publishes_no_children(
    cluster: Cluster, registry: Registry, fronts: FrontFactory
) -> None:
    front = fronts(registry.url)
    image = oci.build_image([os.urandom(MiB)])
    oci.push_built_image(registry, "app", image, "v1")
    gate = front.rule(r"^GET /v2/app/manifests/", gate_offset=10)
    cluster.start_worker()
    job = enqueue_pull(f"{front.host}/app:v1", client=cluster.client)
    assert gate.gate_reached.wait(30), cluster.logs()
    job.cancel()
    gate.gate.set()
    with pytest.raises(errdefs.Canceled):
        job.wait(timeout=60)
    # Planning may read the small config blob (the platform check); no layer is fetched.
    layers = [d.digest for d in image.layer_descriptors]
    assert [r for r in front.requests("GET", "/blobs/") if any(d in r.path for d in layers)] == []
    assert isinstance(job, QueuePullJob) and job.plan() is None


def test_a_committed_layer_of_another_size_than_the_manifest_says_fails_the_pull(
    cluster: Cluster, blob_server: BlobServer
) -> None:
    layer = os.urandom(5000)
    reference, digest = lying_image(blob_server, layer)
    store = LocalStore(cluster.root, fsync=False)
    write_blob(store, "seed", io.BytesIO(layer), Descriptor(Digest.parse(digest), len(layer)))
    cluster.start_worker()
    job = enqueue_pull(reference, client=cluster.client)
    with pytest.raises(errdefs.FailedPrecondition, match="failed size validation: 5000 != 5001"):
        job.wait(timeout=60)
    by_ref = {b.ref: b for b in job.status().blobs}
    assert by_ref[f"layer-{digest}"].state is BlobState.FAILED
    assert reference not in dict(ImageIndex(cluster.root).list())


def test_retries_of_a_queued_pull_bound_its_childrens_retries(
    cluster: Cluster, blob_server: BlobServer
) -> None:
    """``enqueue_pull(retries=1)``: the child ingest of a layer answering 503 asks twice
    (the settings would allow 8 retries), then the pull fails Unavailable."""
    image = oci.build_image([os.urandom(4096)])
    reference = serve_image(blob_server, image, "app", "v1")
    layer = image.layer_descriptors[0].digest
    blob_server.paths[f"/v2/app/blobs/{layer}"].status = 503
    cluster.start_worker()
    job = enqueue_pull(reference, retries=1, client=cluster.client)
    with pytest.raises(errdefs.Unavailable):
        job.wait(timeout=90)
    assert blob_server.count(f"/v2/app/blobs/{layer}") == 2
    assert cluster.client.records.get(job.id)["max_retries"] == "1"


@pytest.mark.slow
def test_the_finalize_that_comes_second_finds_the_pull_ended(
    cluster: Cluster, registry: Registry
) -> None:
    # Each pull's last child starts a finalize while the polls go on: whichever comes
    # second must see the outcome stored and do nothing (no error recorded, none
    # logged, the outcome unchanged).
    cluster.start_worker()
    cluster.start_worker()
    jobs = []
    for i in range(5):
        image = oci.build_image([f"layer {i} {j}".encode() for j in range(3)])
        oci.push_built_image(registry, f"app{i}", image, "v1")
        job = enqueue_pull(f"{registry.host}/app{i}:v1", client=cluster.client)
        assert str(job.wait(timeout=60).target.digest) == image.digest
        jobs.append(job)
    r = redis.Redis.from_url(cluster.redis_url)
    try:  # every message handled: nothing queued, nothing held unacknowledged
        wait_until(lambda: r.llen("ingestq") == 0 and r.hlen("unacked") == 0, 60,
                   "every finalize message handled")  # fmt: skip
    finally:
        r.close()
    for job in jobs:
        assert "error" not in cluster.client.records.get(job.id), cluster.logs()
        assert (cluster.client.meta(job.id) or {}).get("status") == "SUCCESS"
        assert cluster.client.records.get(job.id)["pending"] == "0"
    assert "raised unexpected" not in cluster.logs()
