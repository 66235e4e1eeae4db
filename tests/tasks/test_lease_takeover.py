"""A lease that expires under a SIGSTOPped worker: another worker (another "host": its
own host-lock directory) takes the ref over and commits; after SIGCONT the stale
worker publishes nothing (no status, no lease renewal, no blob) and its job ends as a
success without fetching again."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from ingestq.store.local import LocalStore
from ingestq.tasks import keys
from ingestq.tasks.client import enqueue_ingest
from tests.servers.util import wait_until
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.conftest import ClusterFactory

MiB = 1 << 20


def test_lease_expiry_under_a_stopped_worker_lets_another_take_over(
    cluster_factory: ClusterFactory, redis_url: str, store_root: Path, blob_server: BlobServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    cluster = cluster_factory(redis_url, store_root, INGESTQ_LEASE_TTL="2")
    stale = cluster.start_worker(env={"INGESTQ_LOCK_DIR": str(tmp_path / "host-a-locks")})
    data = os.urandom(8 * MiB)
    blob = Behaviour(data=data, gate_offset=4 * MiB)
    url = blob_server.add("/big", blob)
    first = enqueue_ingest(url, digest=blob.digest, size=len(data), client=cluster.client)
    assert blob.gate_reached.wait(30), cluster.logs()
    store = LocalStore(store_root, fsync=False)
    wait_until(lambda: store.status(first.ref).offset == 4 * MiB, 30, "4 MiB written")
    published = wait_until(
        lambda: (a := cluster.client.board.get(first.ref)) and a.offset == 4 * MiB and a,
        10,
        "the status board shows the 4 MiB",
    )
    assert published.job_id == first.id and published.total == 8 * MiB
    child = published.pid
    assert child in stale.children()

    os.kill(child, signal.SIGSTOP)
    try:
        cluster.start_worker(env={"INGESTQ_LOCK_DIR": str(tmp_path / "host-b-locks")})
        second = enqueue_ingest(url, digest=blob.digest, size=len(data), client=cluster.client)
        info = second.wait(timeout=60)
        assert str(info.digest) == blob.digest
        meta = cluster.client.meta(second.id)
        assert meta is not None
        assert meta["result"]["fetched"] is True and meta["result"]["resumed_from"] == 4 * MiB
    finally:
        os.kill(child, signal.SIGCONT)

    wait_until(lambda: "lost" in stale.log_text(), 20, "the stale worker notices its lease is lost")
    redis = cluster.client.client
    assert cluster.client.board.get(first.ref) is None
    k = keys.ref_keys(first.ref)
    assert redis.exists(k.lease, k.holder, k.status) == 0
    assert int(redis.get(k.fence) or 0) > published.fence  # the new grant's, larger
    assert redis.pttl(k.fence) > 0

    blob.gate.set()
    assert str(first.wait(timeout=60).digest) == blob.digest
    meta = cluster.client.meta(first.id)
    assert meta is not None and meta["result"]["fetched"] is False
    assert cluster.client.board.get(first.ref) is None
    assert (store_root / "blobs" / "sha256" / blob.digest.split(":")[1]).read_bytes() == data
    assert sorted(p.name for p in (store_root / "blobs" / "sha256").iterdir()) == [
        blob.digest.split(":")[1]
    ]
