"""A queue worker under a disk budget (``INGESTQ_MAX_BYTES`` in its environment): an
ingest of known size that does not fit fails with ResourceExhausted before any request
reaches the blob server, and is not retried (store/budget.py; the embedded CLI:
tests/jobs/test_budget.py)."""

from __future__ import annotations

import os

import pytest

from ingestq import errdefs
from ingestq.jobs.api import JobState
from ingestq.store import LocalStore
from ingestq.tasks.client import enqueue_ingest
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.conftest import Cluster

MIB = 1 << 20


@pytest.mark.slow
def test_a_worker_refuses_an_ingest_over_budget_before_fetching(
    cluster: Cluster, blob_server: BlobServer
) -> None:
    big = Behaviour(data=os.urandom(3 * MIB))
    small = Behaviour(data=os.urandom(MIB))
    big_url, small_url = blob_server.add("/big", big), blob_server.add("/small", small)
    cluster.start_worker(env={"INGESTQ_MAX_BYTES": "2M"})

    job = enqueue_ingest(big_url, digest=big.digest, size=3 * MIB, client=cluster.client)
    with pytest.raises(errdefs.ResourceExhausted) as exc:
        job.wait(timeout=30)
    assert "store budget of 2097152 bytes" in str(exc.value)
    assert "3145728 more needed" in str(exc.value)
    assert job.state is JobState.FAILED
    assert blob_server.requests_for("/big") == []

    done = enqueue_ingest(small_url, digest=small.digest, size=MIB, client=cluster.client)
    assert str(done.wait(timeout=30).digest) == small.digest  # what fits still goes in
    assert LocalStore(cluster.root, fsync=False).list_statuses() == []
