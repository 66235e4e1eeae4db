"""A queue worker retries an HTTP source's 429 and 503, honouring Retry-After (the HTTP
source itself: tests/fetch/test_http_source.py)."""

from __future__ import annotations

import os

from ingestq.jobs.api import JobState
from ingestq.tasks.client import enqueue_ingest
from tests.servers.util import wait_until
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.conftest import Cluster


def test_a_worker_retries_429_honouring_retry_after(
    cluster: Cluster, blob_server: BlobServer
) -> None:
    b = Behaviour(data=os.urandom(1000), status_sequence=[429, 503], headers={"Retry-After": "1"})
    url = blob_server.add("/x", b)
    cluster.start_worker()
    job = enqueue_ingest(url, digest=b.digest, size=1000, client=cluster.client)
    wait_until(lambda: job.state is JobState.RETRYING, 30, "the job retries")
    assert "HTTP 429" in (job.reason or "") or "HTTP 503" in (job.reason or "")
    assert str(job.wait(timeout=30).digest) == b.digest
    times = [r.at for r in blob_server.requests_for("/x")]
    assert [r.status for r in blob_server.requests_for("/x")] == [429, 503, 200]
    assert times[1] - times[0] >= 1.0 and times[2] - times[1] >= 1.0
