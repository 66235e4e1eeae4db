"""``enqueue_many``: many ingest jobs in one call (one Redis pipeline for the records,
one producer connection for the messages), run by a real worker; and the in-process
backend's equivalent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from ingestq import enqueue_many as exported
from ingestq import errdefs
from ingestq.ingest.request import IngestRequest
from ingestq.jobs.api import JobState
from ingestq.jobs.config import Settings
from ingestq.jobs.ingest import ingest_request
from ingestq.jobs.local import LocalClient
from ingestq.store.digest import Digest
from ingestq.tasks import keys
from ingestq.tasks.client import enqueue_many
from tests.tasks.conftest import Cluster


def _files(root: Path, n: int) -> list[tuple[Path, bytes]]:
    out = []
    for i in range(n):
        data = os.urandom(4096 + i)
        path = root / f"blob-{i}"
        path.write_bytes(data)
        out.append((path, data))
    return out


def test_ingestq_exports_enqueue_many() -> None:
    assert exported is enqueue_many


@pytest.mark.slow
def test_enqueue_many_publishes_every_job_and_a_worker_runs_them(cluster: Cluster) -> None:
    files = _files(cluster.root.parent / "files", 25)
    requests: list[IngestRequest | str | dict[str, object]] = []
    for i, (path, data) in enumerate(files):
        if i % 3 == 1:
            requests.append({"source": str(path), "digest": str(Digest.from_bytes(data)),
                             "size": len(data)})  # fmt: skip
        elif i % 3 == 2:
            requests.append(str(path))  # a source alone
        else:
            requests.append(ingest_request(str(path)))
    jobs = enqueue_many(requests, client=cluster.client)

    assert len({j.id for j in jobs}) == len(files)
    for job, (path, _) in zip(jobs, files, strict=True):
        record = cluster.client.records.get(job.id)
        assert record["kind"] == "ingest" and record["source"].endswith(path.name)
        assert job.state is JobState.QUEUED  # no worker yet: recorded and queued
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        indexed = {m.decode() for m in r.zrange(keys.JOBS, 0, -1)}
        assert {j.id for j in jobs} <= indexed
        assert all(r.ttl(keys.job_key(j.id)) > 0 for j in jobs)
    finally:
        r.close()

    cluster.start_worker(concurrency=2)
    for job, (_, data) in zip(jobs, files, strict=True):
        info = job.wait(timeout=60)
        assert info.digest == Digest.from_bytes(data), cluster.logs()
        blob = cluster.root / "blobs" / "sha256" / info.digest.encoded
        assert blob.read_bytes() == data
        assert job.state is JobState.SUCCEEDED


def test_a_malformed_request_publishes_nothing(cluster: Cluster) -> None:
    files = _files(cluster.root.parent / "files", 2)
    good = {"source": str(files[0][0])}
    other = str(files[1][0])
    for bad in ({"digest": "sha256:" + "0" * 64}, {"source": other, "colour": "red"},
                {"source": other, "digest": "nope"}, 42, [other]):  # fmt: skip
        with pytest.raises(errdefs.InvalidArgument):
            enqueue_many([good, bad], client=cluster.client)  # type: ignore[list-item]
    assert cluster.client.records.list() == []
    with pytest.raises(errdefs.InvalidArgument, match="retries"):
        enqueue_many([good], client=cluster.client, retries=-1)
    assert cluster.client.records.list() == []


def test_enqueue_many_with_redis_down_is_unavailable_and_leaves_no_record(
    tmp_path: Path,
) -> None:
    from ingestq.tasks.queue import QueueClient

    settings = Settings.from_env(
        {"INGESTQ_REDIS_URL": "redis://127.0.0.1:1/0", "INGESTQ_ROOT": str(tmp_path)}
    )
    client = QueueClient(settings)
    try:
        with pytest.raises(errdefs.Unavailable):
            enqueue_many([{"source": str(tmp_path / "x")}], client=client)
    finally:
        client.close()


def test_enqueue_many_in_process_runs_every_job(tmp_path: Path) -> None:
    src = tmp_path / "files"
    src.mkdir()
    files = _files(src, 5)
    settings = Settings.from_env(
        {"INGESTQ_ROOT": str(tmp_path / "store"), "INGESTQ_FSYNC": "0",
         "INGESTQ_FILE_ROOTS": str(src)}
    )  # fmt: skip
    client = LocalClient(settings)
    try:
        jobs = enqueue_many([{"source": str(p)} for p, _ in files], client=client)
        for job, (_, data) in zip(jobs, files, strict=True):
            assert job.wait(timeout=30).digest == Digest.from_bytes(data)
    finally:
        client.close()
