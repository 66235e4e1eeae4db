"""The workers' periodic gc (``INGESTQ_GC_INTERVAL``): one worker at a time runs it
(the Redis lease), it removes what nothing references, and running it every fraction of
a second while queued pulls and ingests run on the same workers costs no job and no
image a blob (skopeo copies every image afterwards)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from ingestq.store.digest import Digest
from ingestq.store.gc import check_image
from ingestq.store.helpers import write_blob
from ingestq.store.images import ImageIndex
from ingestq.store.local import LocalStore
from ingestq.store.values import Descriptor
from ingestq.tasks.client import enqueue_ingest, enqueue_pull
from tests.servers import oci
from tests.servers.registry import Registry
from tests.servers.skopeo import skopeo
from tests.servers.util import wait_until
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.conftest import ClusterFactory


@pytest.mark.slow
def test_periodic_gc_on_workers_races_queued_pulls_and_ingests_safely(
    cluster_factory: ClusterFactory,
    redis_url: str,
    store_root: Path,
    registry: Registry,
    blob_server: BlobServer,
    tmp_path: Path,
) -> None:
    cluster = cluster_factory(redis_url, store_root, INGESTQ_GC_INTERVAL="0.2")
    store = LocalStore(store_root, fsync=False)
    orphan = b"nothing references me"
    digest = Digest.from_bytes(orphan)
    write_blob(store, "orphan", io.BytesIO(orphan), Descriptor(digest, len(orphan)))
    names = []
    for i in range(4):
        layers = [os.urandom(150_000 + i), b"common layer", os.urandom(500)]
        oci.push_built_image(registry, f"wrace{i}", oci.build_image(layers), "v1")
        names.append(f"{registry.host}/wrace{i}:v1")
    payloads = [os.urandom(200_000 + i) for i in range(4)]
    for i, data in enumerate(payloads):
        blob_server.add(f"/w{i}", Behaviour(data=data, trickle=(32_768, 0.01)))
    a = cluster.start_worker(concurrency=2)
    b = cluster.start_worker(concurrency=2)
    wait_until(lambda: not store.exists(digest), 30.0, "the periodic gc to remove the orphan")

    pulls = [enqueue_pull(name, client=cluster.client) for name in names]
    ingests = [enqueue_ingest(blob_server.url + f"/w{i}", client=cluster.client) for i in range(4)]
    for pull in pulls:
        pull.wait(timeout=120)
    for ingest in ingests:
        ingest.wait(timeout=120)

    runners = [w for w in (a, b) if "runs the periodic gc" in w.log_text()]
    assert len(runners) == 1, cluster.logs()
    assert runners[0].log_text().count("gc: removed") >= 3  # it ran during the jobs
    assert sorted(n for n, _ in ImageIndex(store_root).list()) == sorted(names)
    for i, name in enumerate(names):
        assert check_image(store, name).complete, name
        skopeo("copy", "-q", f"oci:{store_root}:{name}", f"dir:{tmp_path / f'c{i}'}")
    for data in payloads:
        assert store.exists(Digest.from_bytes(data))
