"""Whole-image pulls on the embedded default (in this process, children in a thread
pool) from a real registry: single and multi-platform images of both flavors, labels,
the recorded name, skopeo reading the store, errors, shared layers fetched once."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingestq import errdefs
from ingestq.images.request import PullRequest
from ingestq.images.status import BlobState, PullResult
from ingestq.jobs.api import JobState
from ingestq.jobs.config import Settings
from ingestq.jobs.local import LocalClient
from ingestq.jobs.pullstatus import PullStatus
from ingestq.store.annotations import SOURCE_DIGEST
from ingestq.store.digest import Digest
from ingestq.store.helpers import write_blob
from ingestq.store.images import ImageIndex
from ingestq.store.values import Descriptor
from ingestq.tasks.client import enqueue_pull, get_pull
from tests.images.helpers import lying_image, serve_image
from tests.servers import oci
from tests.servers.registry import Registry
from tests.servers.skopeo import skopeo, skopeo_inspect
from tests.servers.util import wait_until
from tests.tasks.blobserver import BlobServer
from tests.tasks.registry_helpers import (
    FrontFactory,
    MiB,
    push_multiplatform,
)
from tests.tasks.registry_helpers import fronts_fixture as fronts_fixture

GC = "containerd.io/gc.ref.content."


@pytest.fixture
def local(tmp_path: Path) -> LocalClient:
    return LocalClient(Settings(root=tmp_path / "store", fsync=False))


def _pull(local: LocalClient, reference: str, **kwargs: Any) -> PullResult:
    return enqueue_pull(reference, client=local, **kwargs).wait(timeout=60)


def _blob(root: Path, digest: str | Digest) -> bytes:
    d = Digest.parse(str(digest))
    return (root / "blobs" / d.algorithm / d.encoded).read_bytes()


def test_single_oci_image_is_fetched_labelled_recorded_and_readable_by_skopeo(
    registry: Registry, local: LocalClient, tmp_path: Path
) -> None:
    layers = [os.urandom(300_000), os.urandom(200_000)]
    image = oci.build_image(layers)
    oci.push_built_image(registry, "app", image, "v1")
    name = f"{registry.host}/app:v1"
    job = enqueue_pull(name, client=local)
    result = job.wait(timeout=60)

    root = local.store.root
    assert result.name == name
    assert str(result.target.digest) == image.digest
    assert result.recorded == result.target
    assert sorted(c.ref for c in result.children) == sorted(
        [f"config-{image.config_descriptor.digest}"]
        + [f"layer-{d.digest}" for d in image.layer_descriptors]
    )
    assert all(c.fetched for c in result.children)
    assert result.bytes_fetched == sum(map(len, layers)) + len(image.config)
    for d, data in zip(image.layer_descriptors, layers, strict=True):
        assert _blob(root, d.digest) == data
    assert _blob(root, image.digest) == image.manifest

    store = local.store
    source_key = f"containerd.io/distribution.source.{registry.host}"
    manifest_labels = store.info(Digest.parse(image.digest)).labels
    assert manifest_labels[GC + "config"] == image.config_descriptor.digest
    assert manifest_labels[GC + "l.0"] == image.layer_descriptors[0].digest
    assert manifest_labels[GC + "l.1"] == image.layer_descriptors[1].digest
    for d in (image.descriptor, image.config_descriptor, *image.layer_descriptors):
        assert store.info(Digest.parse(d.digest)).labels[source_key] == "app"
    assert ImageIndex(root).get(name).digest == Digest.parse(image.digest)

    status = job.status()
    assert status.state is JobState.SUCCEEDED
    assert [b.state for b in status.blobs] == [BlobState.DONE] * 4
    assert (
        status.bytes_done
        == status.bytes_total
        == image.descriptor.size
        + sum(d.size for d in (image.config_descriptor, *image.layer_descriptors))
    )
    assert get_pull(job.id, client=local).status().name == name

    inspected = skopeo_inspect(f"oci:{root}:{name}")
    assert inspected["Digest"] == image.digest
    assert inspected["Layers"] == [d.digest for d in image.layer_descriptors]
    out = tmp_path / "copied"
    skopeo("copy", "-q", f"oci:{root}:{name}", f"dir:{out}")
    for d, data in zip(image.layer_descriptors, layers, strict=True):
        assert (out / d.digest.split(":")[1]).read_bytes() == data


def test_docker_schema2_image_behind_token_auth_is_recorded_through_an_oci_view(
    registry_token_auth: Registry, local: LocalClient, tmp_path: Path
) -> None:
    registry = registry_token_auth
    layers = [os.urandom(50_000)]
    image = oci.build_image(layers, flavor="docker")
    oci.push_built_image(registry, "dock", image, "v1")
    name = f"{registry.host}/dock:v1"
    result = _pull(local, name)
    assert result.target.media_type == oci.DOCKER_MANIFEST
    assert str(result.target.digest) == image.digest
    assert result.recorded is not None and result.recorded.media_type == oci.OCI_MANIFEST
    entry = ImageIndex(local.store.root).get(name)
    assert entry.digest == result.recorded.digest
    assert entry.annotations[SOURCE_DIGEST] == image.digest
    view = json.loads(_blob(local.store.root, entry.digest))
    assert view["config"]["digest"] == image.config_descriptor.digest
    assert view["layers"][0]["digest"] == image.layer_descriptors[0].digest
    assert registry.token_server is not None
    assert {r.scopes for r in registry.token_server.requests} == {("repository:dock:pull",)}
    root = local.store.root
    inspected = skopeo_inspect(f"oci:{root}:{name}")
    assert inspected["Layers"] == [image.layer_descriptors[0].digest]
    out = tmp_path / "copied"
    skopeo("copy", "-q", f"oci:{root}:{name}", f"dir:{out}")
    assert (out / image.layer_descriptors[0].digest.split(":")[1]).read_bytes() == layers[0]


@pytest.mark.parametrize("flavor", ["oci", "docker"])
def test_multi_platform_images_select_host_named_or_all_platforms(
    registry: Registry, local: LocalClient, flavor: oci.Flavor
) -> None:
    index = push_multiplatform(registry, "multi", "v1", flavor=flavor)
    amd64, arm64 = index.images
    ref = f"{registry.host}/multi:v1"
    store = local.store

    def have(image: oci.Image) -> bool:
        return all(store.exists(Digest.parse(d)) for d in image.blobs())

    host = _pull(local, ref, platforms=["linux/amd64"])
    assert have(amd64) and not have(arm64)
    index_labels = store.info(Digest.parse(index.digest)).labels
    assert index_labels[GC + "m.0"] == amd64.digest
    assert GC + "m.1" not in index_labels
    assert {c.digest for c in host.children} == {Digest.parse(d) for d in amd64.blobs()}

    arm = _pull(local, ref, platforms=["linux/arm64"], name="multi-arm")
    assert have(arm64)
    assert {c.digest for c in arm.children} == {Digest.parse(d) for d in arm64.blobs()}
    assert all(not c.fetched for c in arm.children if str(c.digest) in amd64.blobs())

    everything = _pull(local, ref, all_platforms=True, name="multi-all")
    assert len(everything.children) == len(amd64.blobs()) + len(arm64.blobs())
    assert not any(c.fetched for c in everything.children)
    labels = store.info(Digest.parse(index.digest)).labels
    assert {labels[GC + "m.0"], labels[GC + "m.1"]} == {amd64.digest, arm64.digest}
    names = [n for n, _ in ImageIndex(store.root).list()]
    assert names == [ref, "multi-arm", "multi-all"]
    inspected = skopeo_inspect(f"oci:{store.root}:{ref}")
    assert inspected["Architecture"] == "amd64"
    assert inspected["Layers"] == [d.digest for d in amd64.layer_descriptors]


def test_unknown_tag_and_unknown_blob_fail_the_pull_with_not_found(
    registry: Registry, local: LocalClient
) -> None:
    with pytest.raises(errdefs.NotFound) as tag:
        _pull(local, f"{registry.host}/app:missing")
    assert "MANIFEST_UNKNOWN" in str(tag.value)

    image = oci.build_image([os.urandom(1000), os.urandom(1000)])
    oci.push_built_image(registry, "broken", image, "v1")
    lost = image.layer_descriptors[1].digest
    deleted = httpx.delete(f"{registry.url}/v2/broken/blobs/{lost}")
    assert deleted.status_code == 202
    job = enqueue_pull(f"{registry.host}/broken:v1", client=local)
    with pytest.raises(errdefs.NotFound) as blob:
        job.wait(timeout=60)
    assert str(blob.value).startswith(f"pull {registry.host}/broken:v1: layer-{lost}: ")
    assert "BLOB_UNKNOWN" in str(blob.value)
    assert job.state is JobState.FAILED
    assert f"{registry.host}/broken:v1" not in dict(ImageIndex(local.store.root).list())
    push_multiplatform(registry, "multi", "v1")
    with pytest.raises(errdefs.NotFound, match="no match for platform linux/s390x"):
        _pull(local, f"{registry.host}/multi:v1", platforms=["linux/s390x"])


def test_malformed_requests_fail_before_anything_starts(local: LocalClient) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        enqueue_pull("Bad/Name", client=local)
    with pytest.raises(errdefs.InvalidArgument):
        enqueue_pull("127.0.0.1:1/app:v1", platforms=["linux/"], client=local)
    with pytest.raises(errdefs.InvalidArgument, match="concurrency"):
        enqueue_pull(PullRequest("127.0.0.1:1/app:v1", concurrency=0), client=local)
    assert PullRequest.from_json(PullRequest("a/b", ("linux/arm64",)).to_json()) == PullRequest(
        "a/b", ("linux/arm64",)
    )


def test_two_concurrent_pulls_sharing_layers_fetch_each_shared_layer_once(
    registry: Registry, fronts: FrontFactory, local: LocalClient
) -> None:
    front = fronts(registry.url)
    shared = [os.urandom(2 * MiB), os.urandom(MiB)]
    one = oci.build_image([*shared, os.urandom(1000)])
    two = oci.build_image([*shared, os.urandom(2000)])
    oci.push_built_image(registry, "one", one, "v1")
    oci.push_built_image(registry, "two", two, "v1")
    # Hold the first download of the big shared layer until both pulls have planned.
    big = one.layer_descriptors[0].digest
    gate = front.rule(rf"^GET /v2/\w+/blobs/{big}", gate_offset=MiB)
    first = enqueue_pull(f"{front.host}/one:v1", client=local)
    second = enqueue_pull(f"{front.host}/two:v1", client=local)
    assert gate.gate_reached.wait(30)
    wait_until(lambda: second.status().blobs, 30, "the second pull has its plan")
    gate.gate.set()
    results = [first.wait(timeout=60), second.wait(timeout=60)]
    for d in shared:
        served = [
            r for r in front.requests("GET", str(Digest.from_bytes(d))) if r.status in (200, 206)
        ]
        assert len(served) == 1, served
    fetched = [c for r in results for c in r.children if c.fetched]
    assert sorted(str(c.digest) for c in fetched if str(c.digest) in one.blobs()) == sorted(
        set(one.blobs()) & {str(c.digest) for c in fetched}
    )
    shared_fetches = [c for c in fetched if c.digest in {Digest.from_bytes(d) for d in shared}]
    assert len(shared_fetches) == 2  # each shared layer fetched by exactly one pull


def test_status_shows_the_download_in_progress(
    registry: Registry, fronts: FrontFactory, local: LocalClient
) -> None:
    front = fronts(registry.url)
    layer = os.urandom(2 * MiB)
    image = oci.build_image([layer])
    oci.push_built_image(registry, "slow", image, "v1")
    gate = front.rule(r"^GET /v2/slow/blobs/sha256:" + image.layer_descriptors[0].digest[7:],
                      gate_offset=MiB)  # fmt: skip
    job = enqueue_pull(f"{front.host}/slow:v1", client=local)
    assert gate.gate_reached.wait(30)

    def halfway() -> PullStatus | None:
        s = job.status()
        return s if s.bytes_done >= MiB + len(image.manifest) else None

    status = wait_until(halfway, 30, "the layer's first MiB is in")
    assert status is not None
    by_ref = {b.ref: b for b in status.blobs}
    layer_status = by_ref[f"layer-{image.layer_descriptors[0].digest}"]
    assert layer_status.state is BlobState.DOWNLOADING
    assert layer_status.offset == MiB
    assert by_ref[f"manifest-{image.digest}"].state is BlobState.DONE
    assert status.state is JobState.STARTED
    threading.Thread(target=gate.gate.set).start()
    assert job.wait(timeout=60).name == f"{front.host}/slow:v1"


def test_a_trickling_layer_fails_the_pull_unavailable_by_the_configured_low_speed_rule(
    blob_server: BlobServer, tmp_path: Path
) -> None:
    image = oci.build_image([os.urandom(4096)])
    reference = serve_image(blob_server, image, "app", "v1")
    layer = image.layer_descriptors[0].digest
    blob_server.paths[f"/v2/app/blobs/{layer}"].trickle = (1, 0.25)
    settings = Settings(root=tmp_path / "store", fsync=False, low_speed_limit=1024,
                        low_speed_time=1.0, max_source_retries=0)  # fmt: skip
    job = enqueue_pull(reference, client=LocalClient(settings))
    with pytest.raises(errdefs.Unavailable, match="slower than 1024 bytes/s over 1 s") as exc:
        job.wait(timeout=30)  # the default rule (60 s) would still be waiting
    assert f"layer-{layer}" in str(exc.value)


def test_a_committed_layer_of_another_size_than_the_manifest_says_fails_the_pull(
    blob_server: BlobServer, local: LocalClient
) -> None:
    layer = os.urandom(5000)
    reference, digest = lying_image(blob_server, layer)
    store = local.store
    write_blob(store, "seed", io.BytesIO(layer), Descriptor(Digest.parse(digest), len(layer)))
    job = enqueue_pull(reference, client=local)
    with pytest.raises(errdefs.FailedPrecondition, match="failed size validation: 5000 != 5001"):
        job.wait(timeout=30)
    by_ref = {b.ref: b for b in get_pull(job.id, client=local).status().blobs}
    assert by_ref[f"layer-{digest}"].state is not BlobState.DONE
    assert reference not in dict(ImageIndex(store.root).list())


@pytest.mark.parametrize("retries", [0, 2])
def test_retries_bound_how_often_an_unavailable_layer_is_asked_for(
    blob_server: BlobServer, tmp_path: Path, retries: int
) -> None:
    """``enqueue_pull(retries=N)`` (``ingestq pull --retries N``): a layer that answers
    503 is asked for N + 1 times, then the pull fails Unavailable; the settings say 8."""
    image = oci.build_image([os.urandom(4096)])
    reference = serve_image(blob_server, image, "app", "v1")
    layer = image.layer_descriptors[0].digest
    blob_server.paths[f"/v2/app/blobs/{layer}"].status = 503
    settings = Settings(root=tmp_path / "store", fsync=False, retry_cap=0.05,
                        max_source_retries=8)  # fmt: skip
    job = enqueue_pull(reference, retries=retries, client=LocalClient(settings))
    with pytest.raises(errdefs.Unavailable):
        job.wait(timeout=60)
    assert blob_server.count(f"/v2/app/blobs/{layer}") == retries + 1
