"""A real worker never wedges its slots on a non-regular file: FIFO ingests fail
InvalidArgument at once and the worker keeps serving. (The file source itself:
tests/fetch/test_file_source_safety.py.)"""

from __future__ import annotations

import os

import pytest

from ingestq import errdefs
from ingestq.jobs.api import JobState
from ingestq.store.digest import Digest
from ingestq.tasks.client import enqueue_ingest
from tests.tasks.conftest import Cluster


@pytest.mark.slow
def test_fifo_ingests_fail_at_once_and_leave_both_worker_slots_free(cluster: Cluster) -> None:
    files = cluster.root.parent / "files"  # INGESTQ_FILE_ROOTS of the cluster's workers
    assert cluster.env["INGESTQ_FILE_ROOTS"] == str(files)
    fifos = [files / "fifo-a", files / "fifo-b"]
    for fifo in fifos:
        os.mkfifo(fifo)  # no writer ever comes: a blocking open would hang a slot for good
    data = os.urandom(200_000)
    (files / "regular.bin").write_bytes(data)
    cluster.start_worker(concurrency=2)

    # Two FIFO jobs, one per slot, queued ahead of the regular file: the regular one
    # can only run once a FIFO job has given its slot back.
    fifo_jobs = [enqueue_ingest(str(fifo), client=cluster.client) for fifo in fifos]
    regular = enqueue_ingest(str(files / "regular.bin"), client=cluster.client)

    for job, fifo in zip(fifo_jobs, fifos, strict=True):
        with pytest.raises(errdefs.InvalidArgument, match="not a regular file") as caught:
            job.wait(timeout=30)
        assert str(fifo) in str(caught.value), cluster.logs()
        assert job.state is JobState.FAILED
    info = regular.wait(timeout=30)
    assert info.digest == Digest.from_bytes(data), cluster.logs()
    assert info.size == len(data)
    blob = cluster.root / "blobs" / info.digest.algorithm / info.digest.encoded
    assert blob.read_bytes() == data
    assert regular.state is JobState.SUCCEEDED
