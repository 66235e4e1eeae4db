"""A queued ingest whose cancel flag is set before it runs fails Canceled: the flag is
read by the lease's acquire (no lease is taken, nothing is fetched), or, for a job whose
blob is already committed (no lease), once at the end."""

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
from tests.tasks.conftest import Cluster


@pytest.mark.slow
def test_a_job_flagged_before_it_runs_is_canceled_and_fetches_nothing(cluster: Cluster) -> None:
    files = cluster.root.parent / "files"
    data = os.urandom(4096)
    (files / "flagged").write_bytes(data)
    digest = Digest.from_bytes(data)
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        records = RedisJobRecords(r, 3600)
        job = enqueue_ingest(str(files / "flagged"), digest=str(digest), size=len(data),
                             client=cluster.client)  # fmt: skip
        other = enqueue_ingest(str(files / "flagged"), size=len(data), client=cluster.client)
        records.request_cancel(job.id)  # the flag alone: the message stays queued
        records.request_cancel(other.id)
        cluster.start_worker(concurrency=1)
        for j in (job, other):  # the small-blob path and the writer path
            with pytest.raises(errdefs.Canceled, match=f"job {j.id} canceled"):
                j.wait(timeout=60)
            assert j.state is JobState.CANCELED, cluster.logs()
        assert not (cluster.root / "blobs" / "sha256" / digest.encoded).exists()
        assert r.get(keys.ref_keys(job.ref).lease) is None
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
