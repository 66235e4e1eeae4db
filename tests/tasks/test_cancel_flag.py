"""A queued ingest whose cancel flag is set before it runs fails Canceled: the flag is
read by the lease's acquire (no lease is taken, nothing is fetched), by the ingest core
before it reads a small file (which takes no lease), or, for a job whose blob is already
committed (no lease), once at the end."""

from __future__ import annotations

import os

import pytest
import redis

from ingestq import errdefs
from ingestq.jobs.api import JobState
from ingestq.store.digest import Digest
from ingestq.store.local import LocalStore
from ingestq.store.values import Descriptor
from ingestq.tasks import keys
from ingestq.tasks.client import enqueue_ingest
from ingestq.tasks.records import RedisJobRecords
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.conftest import Cluster


@pytest.mark.slow
def test_a_job_flagged_before_it_runs_is_canceled_and_fetches_nothing(
    cluster: Cluster, blob_server: BlobServer
) -> None:
    files = cluster.root.parent / "files"
    data = os.urandom(4096)
    (files / "flagged").write_bytes(data)
    digest = Digest.from_bytes(data)
    remote = Behaviour(data=os.urandom(4096))
    url = blob_server.add("/flagged", remote)
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        records = RedisJobRecords(r, 3600)
        job = enqueue_ingest(str(files / "flagged"), digest=str(digest), size=len(data),
                             client=cluster.client)  # fmt: skip
        large = os.urandom((1 << 20) + 1)  # over INGESTQ_SMALL_BLOB: the writer path
        (files / "large").write_bytes(large)
        other = enqueue_ingest(str(files / "large"), size=len(large), client=cluster.client)
        fetched = enqueue_ingest(url, digest=remote.digest, size=4096, client=cluster.client)
        for j in (job, other, fetched):
            records.request_cancel(j.id)  # the flag alone: the message stays queued
        cluster.start_worker(concurrency=1)
        # The small-blob path of a file (no lease), the writer path, and the small-blob
        # path of a URL (the flag read by the lease's acquire).
        for j in (job, other, fetched):
            with pytest.raises(errdefs.Canceled, match="canceled"):
                j.wait(timeout=60)
            assert j.state is JobState.CANCELED, cluster.logs()
        assert not (cluster.root / "blobs" / "sha256" / digest.encoded).exists()
        assert not (cluster.root / "blobs" / "sha256" / Digest.from_bytes(large).encoded).exists()
        assert list((cluster.root / "ingest").glob("*")) == []  # the writer never started
        assert not (cluster.root / "blobs" / "sha256" / remote.digest.split(":")[1]).exists()
        assert blob_server.count("/flagged") == 0
        for j in (job, fetched):
            assert r.get(keys.ref_keys(j.ref).lease) is None
    finally:
        r.close()


@pytest.mark.slow
def test_a_flagged_job_whose_blob_is_committed_is_canceled(cluster: Cluster) -> None:
    files = cluster.root.parent / "files"
    data = os.urandom(4096)
    (files / "committed").write_bytes(data)
    digest = Digest.from_bytes(data)
    LocalStore(cluster.root, fsync=False).put("seed", Descriptor(digest, len(data)), data)
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        job = enqueue_ingest(str(files / "committed"), digest=str(digest), size=len(data),
                             client=cluster.client)  # fmt: skip
        RedisJobRecords(r, 3600).request_cancel(job.id)
        cluster.start_worker(concurrency=1)
        with pytest.raises(errdefs.Canceled):
            job.wait(timeout=60)
        unflagged = enqueue_ingest(str(files / "committed"), digest=str(digest),
                                   size=len(data), client=cluster.client)  # fmt: skip
        assert unflagged.wait(timeout=60).digest == digest
    finally:
        r.close()
