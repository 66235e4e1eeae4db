"""N jobs for one digest fetch its bytes once; waiting jobs show a retrying state with
the reason, then succeed without fetching."""

from __future__ import annotations

import os

import pytest

from ingestq import errdefs
from ingestq.jobs.api import JobState
from ingestq.tasks.client import enqueue_ingest
from tests.servers.util import wait_until
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.conftest import Cluster


def test_fifty_jobs_for_one_digest_on_two_workers_fetch_the_bytes_once(
    cluster: Cluster, blob_server: BlobServer
) -> None:
    data = os.urandom(2 << 20)
    blob = Behaviour(data=data, gate_offset=1 << 20)
    url = blob_server.add("/one", blob)
    cluster.start_worker()
    cluster.start_worker()
    jobs = [
        enqueue_ingest(url, digest=blob.digest, size=len(data), client=cluster.client)
        for _ in range(50)
    ]
    assert blob.gate_reached.wait(30), cluster.logs()
    waiting = wait_until(
        lambda: next((j for j in jobs if j.state is JobState.RETRYING), None),
        30,
        "a job shows the retrying state",
    )
    assert "locked" in (waiting.reason or "")
    assert waiting.ref == f"blob-{blob.digest}"
    blob.gate.set()
    infos = [j.wait(timeout=60) for j in jobs]
    assert {str(i.digest) for i in infos} == {blob.digest}
    assert all(j.state is JobState.SUCCEEDED for j in jobs)
    served = blob_server.requests_for("/one")
    assert [r.status for r in served] == [200], served
    assert blob_server.bytes_served("/one") == len(data)
    assert (cluster.root / "blobs" / "sha256" / blob.digest.split(":")[1]).read_bytes() == data


def test_an_idempotency_key_reused_for_another_request_is_failed_precondition(
    cluster: Cluster,
) -> None:
    first = enqueue_ingest({"type": "file", "path": "/nonexistent/a"}, idempotency_key="k-ab",
                           client=cluster.client)  # fmt: skip
    with pytest.raises(errdefs.FailedPrecondition, match="idempotency key 'k-ab'"):
        enqueue_ingest({"type": "file", "path": "/nonexistent/b"}, idempotency_key="k-ab",
                       client=cluster.client)  # fmt: skip
    same = enqueue_ingest({"type": "file", "path": "/nonexistent/a"}, idempotency_key="k-ab",
                          client=cluster.client)  # fmt: skip
    assert same.id == first.id


def test_an_idempotency_key_or_job_id_publishes_once(cluster: Cluster) -> None:
    spec = {"type": "file", "path": "/nonexistent"}
    first = enqueue_ingest(spec, idempotency_key="request-42", client=cluster.client)
    again = enqueue_ingest(spec, idempotency_key="request-42", client=cluster.client)
    chosen = enqueue_ingest(spec, job_id="mine", client=cluster.client)
    chosen_again = enqueue_ingest(spec, job_id="mine", client=cluster.client)
    assert first.id == again.id and chosen.id == chosen_again.id == "mine"
    assert cluster.client.client.llen("ingestq") == 2  # two messages, not four
    assert first.state is JobState.QUEUED and first.progress is None
