"""The job record store contract (ingestq/jobs/testing.py) run against all three
stores: in memory, files under a store root (with and without fsync), and Redis (a real
redis-server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.jobs.local.records import FileJobRecords
from ingestq.jobs.records import JobRecordStore, MemoryJobRecords, record_error
from ingestq.jobs.testing import JobRecordStoreContract
from ingestq.store.layout import RootLayout
from ingestq.tasks.records import RedisJobRecords
from ingestq.tasks.redisconn import redis_client


class TestMemoryJobRecords(JobRecordStoreContract):
    @pytest.fixture
    def records(self) -> JobRecordStore:
        return MemoryJobRecords()


class TestFileJobRecords(JobRecordStoreContract):
    @pytest.fixture(params=[False, True], ids=["nofsync", "fsync"])
    def records(self, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[JobRecordStore]:
        root = tmp_path / "store"
        yield FileJobRecords(root, sync=request.param)
        leftovers = [p.name for p in RootLayout(root).jobs.iterdir() if p.name.startswith(".")]
        assert leftovers == [], "temporary files left behind"

    def reopen(self, records: JobRecordStore) -> JobRecordStore:
        assert isinstance(records, FileJobRecords)
        return FileJobRecords(records.root)


class TestRedisJobRecords(JobRecordStoreContract):
    @pytest.fixture
    def records(self, redis_url: str) -> Iterator[JobRecordStore]:
        client = redis_client(redis_url, socket_timeout=5.0)
        self._url = redis_url
        yield RedisJobRecords(client, ttl=600)
        client.close()

    def reopen(self, records: JobRecordStore) -> JobRecordStore:
        return RedisJobRecords(redis_client(self._url, socket_timeout=5.0), ttl=600)


def test_file_records_live_at_the_layouts_job_record_path(tmp_path: Path) -> None:
    records = FileJobRecords(tmp_path)
    records.create("job-1", {"ref": "r"})
    path = RootLayout(tmp_path).job_record("job-1")
    assert json.loads(path.read_text())["ref"] == "r"
    records.request_cancel("job-1")
    assert path.with_suffix(".cancel").exists()


def test_file_records_of_earlier_versions_read_as_text_fields(tmp_path: Path) -> None:
    path = RootLayout(tmp_path).job_record("old")
    path.parent.mkdir(parents=True)
    error = errdefs.to_json_dict(errdefs.NotFound("x"))
    path.write_text(json.dumps({"state": "failed", "pid": 12, "error": error, "reason": None}))
    got = FileJobRecords(tmp_path).get("old")
    assert got["pid"] == "12" and "reason" not in got
    assert json.loads(got["error"]) == error


def test_an_unreadable_file_record_is_data_loss(tmp_path: Path) -> None:
    records = FileJobRecords(tmp_path)
    RootLayout(tmp_path).job_record("bad").write_text("{not json")
    with pytest.raises(errdefs.DataLoss):
        records.get("bad")


def test_redis_records_expire_with_the_results(redis_url: str) -> None:
    client = redis_client(redis_url, socket_timeout=5.0)
    records = RedisJobRecords(client, ttl=100)
    records.create("j", {"ref": "r"}, "k")
    records.request_cancel("j")
    assert 0 < client.ttl("ingestq:job:j") <= 100
    assert 0 < client.ttl("ingestq:idem:k") <= 100
    records.request_cancel("unknown")
    assert 0 < client.ttl("ingestq:job:unknown") <= 100
    client.close()


def test_record_error_is_best_effort() -> None:
    records = RedisJobRecords(redis_client("redis://127.0.0.1:1/0", socket_timeout=0.5), 60)
    record_error(records, "j", errdefs.NotFound("x"))  # Redis unreachable: no raise
    with pytest.raises(errdefs.Unavailable):
        records.get("j")
