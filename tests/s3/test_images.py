"""Image records of an S3 store: ``<prefix>/index.json`` in the bucket, changed with
conditional writes, so concurrent recorders on different hosts lose nothing; and a
whole pull into an S3 store (embedded jobs) records its image there."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.jobs.config import Settings
from ingestq.jobs.local import LocalClient
from ingestq.s3 import S3Location, S3Store
from ingestq.s3.images import S3ImageIndex
from ingestq.store import Descriptor, Digest, LocalStore
from ingestq.store.images import ImageIndex, ImageRecord, image_index_of
from ingestq.tasks.client import enqueue_pull
from tests.servers import oci
from tests.servers.registry import Registry
from tests.servers.seaweed import S3Endpoint


def target(n: int) -> Descriptor:
    return Descriptor(
        Digest.from_bytes(str(n).encode()), 100 + n, "application/vnd.oci.image.manifest.v1+json"
    )


@pytest.fixture
def location(s3_bucket: str, s3_prefix: str) -> S3Location:
    return S3Location(s3_bucket, s3_prefix)


def test_the_index_lives_in_the_bucket_as_an_oci_index(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    store = S3Store(location, s3_endpoint.client(), tmp_path)
    index = image_index_of(store, tmp_path)
    assert isinstance(index, S3ImageIndex)
    assert index.list() == []
    index.put("app:v1", target(1))
    index.put("app:v2", target(2))
    index.put("app:v1", target(3))  # replaces
    assert [n for n, _ in index.list()] == ["app:v2", "app:v1"]
    assert index.get("app:v1").digest == target(3).digest
    now = datetime.now(UTC).replace(microsecond=0)
    index.add_record(ImageRecord("new", target(4), {"team": "infra"}, now, now))
    with pytest.raises(errdefs.AlreadyExists):
        index.add_record(ImageRecord("new", target(5), {}, now, now))
    assert dict(index.record("new").labels) == {"team": "infra"}
    index.remove("app:v2")
    with pytest.raises(errdefs.NotFound):
        index.remove("app:v2")
    raw = s3_endpoint.client().get_object(Bucket=location.bucket, Key=location.key("index.json"))
    doc = json.loads(raw["Body"].read())
    assert doc["mediaType"] == "application/vnd.oci.image.index.v1+json"
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in doc["manifests"]]
    assert names == ["app:v1", "new"]
    assert not (tmp_path / "index.json").exists()
    assert type(image_index_of(LocalStore(tmp_path / "local"), tmp_path / "local")) is ImageIndex


def test_concurrent_recorders_on_different_hosts_lose_no_image(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    hosts = [S3Store(location, s3_endpoint.client(), tmp_path / f"h{i}") for i in range(4)]
    errors: list[BaseException] = []

    def record(i: int) -> None:
        try:
            for j in range(5):
                hosts[i].image_index().put(f"img-{i}-{j}", target(10 * i + j))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=record, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    names = {n for n, _ in hosts[0].image_index().list()}
    assert names == {f"img-{i}-{j}" for i in range(4) for j in range(5)}


def test_a_pull_into_an_s3_store_records_its_image_in_the_bucket(
    registry: Registry,
    s3_endpoint: S3Endpoint,
    location: S3Location,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in s3_endpoint.env().items():
        monkeypatch.setenv(name, value)
    layers = [os.urandom(300_000), os.urandom(200_000)]
    image = oci.build_image(layers)
    oci.push_built_image(registry, "app", image, "v1")
    local = LocalClient(Settings(root=tmp_path / "host", fsync=False, store_url=str(location)))
    name = f"{registry.host}/app:v1"
    result = enqueue_pull(name, client=local).wait(timeout=60)
    assert str(result.target.digest) == image.digest
    store = local.store
    assert isinstance(store, S3Store)
    assert store.image_index().get(name).digest == result.recorded.digest
    for d, data in zip(image.layer_descriptors, layers, strict=True):
        with store.reader_at(d.digest) as ra:
            assert ra.read_at(0, ra.size) == data
    assert not (tmp_path / "host" / "blobs").exists()
