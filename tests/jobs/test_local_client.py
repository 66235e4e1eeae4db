"""The in-process backend through the job interface: retries per the one policy
(a 429 honouring Retry-After), idempotency, cancel, a dead process, the record store it
is given, and the producer API picking it without Redis."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.jobs.api import JobClient, JobState
from ingestq.jobs.config import Settings
from ingestq.jobs.ingest import ingest_request
from ingestq.jobs.local import LocalClient
from ingestq.jobs.local.records import FileJobRecords
from ingestq.jobs.records import MemoryJobRecords, error_text
from ingestq.store.digest import Digest
from ingestq.tasks.client import connect, enqueue_ingest, enqueue_pull, get_job, get_pull
from tests.servers.util import wait_until
from tests.tasks.blobserver import Behaviour, BlobServer


@pytest.fixture
def local(store_root: Path) -> LocalClient:
    return LocalClient(Settings(root=store_root, fsync=False, retry_cap=2.0))


def test_connect_without_redis_is_the_in_process_backend(store_root: Path) -> None:
    client: JobClient = connect(Settings(root=store_root, fsync=False))
    assert isinstance(client, LocalClient) and client.in_process
    client.close()


def test_a_429_is_retried_after_its_retry_after_and_shows_retrying(
    blob_server: BlobServer, local: LocalClient
) -> None:
    b = Behaviour(data=os.urandom(1000), status_sequence=[429], headers={"Retry-After": "1"})
    url = blob_server.add("/x", b)
    job = enqueue_ingest(url, digest=b.digest, size=len(b.data), client=local)
    wait_until(lambda: job.state is JobState.RETRYING, 10, "the job waits out the 429")
    assert "429" in (job.reason or "")
    assert str(job.wait(timeout=30).digest) == b.digest
    statuses = [(r.status, r.at) for r in blob_server.requests_for("/x")]
    assert [s for s, _ in statuses] == [429, 200]
    assert statuses[1][1] - statuses[0][1] >= 0.9  # Retry-After: 1 (backoff alone: 0.5-1)
    assert job.state is JobState.SUCCEEDED and job.reason is None


def test_the_retries_end_after_max_source_retries(
    blob_server: BlobServer, store_root: Path
) -> None:
    local = LocalClient(Settings(root=store_root, fsync=False, max_source_retries=1))
    b = Behaviour(data=b"x", status=503)
    url = blob_server.add("/down", b)
    with pytest.raises(errdefs.Unavailable, match="503"):
        enqueue_ingest(url, client=local).wait(timeout=30)
    assert [r.status for r in blob_server.requests_for("/down")] == [503, 503]


def test_an_id_or_key_used_before_returns_the_first_job(
    blob_server: BlobServer, local: LocalClient
) -> None:
    b = Behaviour(data=os.urandom(100))
    url = blob_server.add("/once", b)
    first = enqueue_ingest(url, digest=b.digest, idempotency_key="k", client=local)
    again = enqueue_ingest(url, digest=b.digest, idempotency_key="k", client=local)
    chosen = enqueue_ingest(url, digest=b.digest, job_id=first.id, client=local)
    assert first.id == again.id == chosen.id
    assert str(again.wait(timeout=30).digest) == b.digest
    assert len(blob_server.requests_for("/once")) == 1
    assert get_job(first.id, client=local).state is JobState.SUCCEEDED


def test_an_idempotency_key_reused_for_another_request_is_failed_precondition(
    blob_server: BlobServer, local: LocalClient
) -> None:
    one = blob_server.add("/one", Behaviour(data=b"one"))
    two = blob_server.add("/two", Behaviour(data=b"two"))
    first = enqueue_ingest(one, idempotency_key="k2", client=local)
    with pytest.raises(errdefs.FailedPrecondition, match="idempotency key 'k2'"):
        enqueue_ingest(two, idempotency_key="k2", client=local)
    with pytest.raises(errdefs.FailedPrecondition, match="k2"):
        enqueue_pull("oci-layout:/nonexistent:v1", idempotency_key="k2", client=local)
    assert enqueue_ingest(one, idempotency_key="k2", client=local).id == first.id
    first.wait(timeout=30)
    assert blob_server.requests_for("/two") == []


def test_unknown_jobs(local: LocalClient) -> None:
    assert local.job("nope").state is JobState.UNKNOWN
    assert get_pull("nope", client=local).status().state is JobState.UNKNOWN
    with pytest.raises(errdefs.NotFound):
        local.job("nope").wait(timeout=1)
    with pytest.raises(errdefs.NotFound):
        local.job("nope").cancel()


def test_a_job_whose_process_died_reads_as_aborted(local: LocalClient) -> None:
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    local.records.create("orphan", {"state": "started", "pid": str(dead),
                                    "host": socket.gethostname(), "ref": "r"})  # fmt: skip
    job = local.job("orphan")
    assert job.state is JobState.FAILED
    with pytest.raises(errdefs.Aborted, match=f"process {dead} exited"):
        job.wait(timeout=1)


def test_a_failed_job_keeps_its_error_record(local: LocalClient) -> None:
    local.records.create("failed", {"state": "failed", "error": error_text(
        errdefs.PermissionDenied("nope", {"path": "/x"}))})  # fmt: skip
    with pytest.raises(errdefs.PermissionDenied) as caught:
        local.job("failed").wait(timeout=1)
    assert caught.value.details == {"path": "/x"}
    assert local.job("failed").reason == "nope: permission denied"


def test_records_go_to_the_store_given(blob_server: BlobServer, store_root: Path) -> None:
    memory = MemoryJobRecords()
    local = LocalClient(Settings(root=store_root, fsync=False), records=memory)
    b = Behaviour(data=os.urandom(100))
    job = local.submit_ingest(ingest_request(blob_server.add("/m", b)), job_id="m1")
    info = job.wait(timeout=30)
    assert info.digest == Digest.parse(b.digest)
    record = memory.get("m1")
    assert record["state"] == "succeeded" and record["kind"] == "ingest"
    assert json.loads(record["result"])["digest"] == b.digest
    assert FileJobRecords(store_root).get("m1") == {}


def test_cancel_while_retrying_stops_the_job(blob_server: BlobServer, local: LocalClient) -> None:
    b = Behaviour(data=b"x", status=503, headers={"Retry-After": "60"})
    job = enqueue_ingest(blob_server.add("/slow", b), client=local)
    wait_until(lambda: job.state is JobState.RETRYING, 10, "the job waits out the 503")
    job.cancel()
    with pytest.raises(errdefs.Canceled):
        job.wait(timeout=10)
    assert job.state is JobState.CANCELED
