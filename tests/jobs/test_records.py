"""The job record store contract (ingestq/jobs/testing.py) run against all three
stores: in memory, files under a store root (with and without fsync), and Redis (a real
redis-server)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.jobs.local.records import FileJobRecords
from ingestq.jobs.records import (
    MAX_FIELDS,
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    JobRecordStore,
    MemoryJobRecords,
    check_record,
    decode_error_field,
    error_from_text,
    error_text,
    load_json,
    record_error,
)
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


def test_pruning_file_records_removes_temporary_files_of_killed_writers(tmp_path: Path) -> None:
    records = FileJobRecords(tmp_path)
    records.create("job-1", {"ref": "r"})
    jobs = RootLayout(tmp_path).job_record("job-1").parent
    old = time.time() - 2 * 24 * 3600
    stale = [
        jobs / ".job-2.json.1a2b3c4d.tmp",  # an update killed before its rename
        jobs / ".job-3.json.5e6f7a8b.new",  # a create killed before its link
        jobs / "..job-3.json.5e6f7a8b.new.0c0d0e0f.tmp",  # that file's own write
    ]
    fresh = jobs / ".job-4.json.99999999.tmp"
    for path in [*stale, fresh]:
        path.write_text("{")
    for path in stale:
        os.utime(path, (old, old))
    records.prune(time.time() - 3600, dry_run=True)
    assert all(p.exists() for p in stale)
    records.prune(time.time() - 3600)
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and records.get("job-1")["ref"] == "r"


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


def test_a_redis_record_is_claimed_with_its_fields_and_expiry_in_one_command(
    redis_url: str,
) -> None:
    """No crash between the claim and the expiry can leave a record that never expires:
    the claim, its fields and the expiry are one script call (one EVALSHA; the HSETNX,
    HSET and EXPIRE all run inside it)."""
    client = redis_client(redis_url, socket_timeout=5.0)
    records = RedisJobRecords(client, ttl=100)
    records.create("warm", {})  # loads the script
    client.config_resetstat()
    assert records.create("one", {"ref": "r", "state": "queued"}) == ("one", True)
    calls = {k: v["calls"] for k, v in client.info("commandstats").items()}
    assert calls["cmdstat_evalsha"] == 1
    assert calls["cmdstat_hsetnx"] == calls["cmdstat_hset"] == 1
    assert calls["cmdstat_expire"] == 2  # the record and the job index (listing)
    assert 0 < client.ttl("ingestq:jobs") <= 100
    assert records.get("one")["ref"] == "r"
    assert 0 < client.ttl("ingestq:job:one") <= 100
    assert records.create("one", {"ref": "other"}) == ("one", False)
    assert records.get("one")["ref"] == "r"
    client.close()


def test_a_batch_of_claims_trims_the_index_once_and_each_renews_its_expiry(
    redis_url: str,
) -> None:
    client = redis_client(redis_url, socket_timeout=5.0)
    records = RedisJobRecords(client, ttl=100)
    records.create("warm", {})  # loads the script
    client.zadd("ingestq:jobs", {"stale": time.time() - 1000})  # older than the ttl
    client.config_resetstat()
    assert records.create_many([(f"b{i}", {"ref": f"r{i}"}) for i in range(5)]) == [True] * 5
    calls = {k: v["calls"] for k, v in client.info("commandstats").items()}
    assert calls["cmdstat_evalsha"] == 5
    assert calls["cmdstat_expire"] == 10  # each record and, with it, the job index
    assert calls["cmdstat_zremrangebyscore"] == calls["cmdstat_zremrangebyrank"] == 1
    members = {m.decode() for m in client.zrange("ingestq:jobs", 0, -1)}
    assert members == {"warm", *(f"b{i}" for i in range(5))}  # "stale" trimmed
    assert 0 < client.ttl("ingestq:jobs") <= 100
    assert all(0 < client.ttl(f"ingestq:job:b{i}") <= 100 for i in range(5))
    assert records.create_many([("b0", {"ref": "other"}), ("b9", {})]) == [False, True]
    assert records.get("b0")["ref"] == "r0"
    client.close()


def test_record_error_is_best_effort() -> None:
    records = RedisJobRecords(redis_client("redis://127.0.0.1:1/0", socket_timeout=0.5), 60)
    record_error(records, "j", errdefs.NotFound("x"))  # Redis unreachable: no raise
    with pytest.raises(errdefs.Unavailable):
        records.get("j")


# decoding what a store hands back ------------------------------------------------------
def test_load_json_is_bounded_in_depth_and_size() -> None:
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert load_json(at_limit, "x") == json.loads(at_limit)
    nested = {"a": [{"b": 1}]}
    assert load_json(json.dumps(nested).encode(), "x") == nested
    too_deep = [
        "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
        '{"a": ' * 100_000 + "1" + "}" * 100_000,  # json.loads itself would recurse out
    ]
    for text in too_deep:
        with pytest.raises(errdefs.InvalidArgument, match="what: nested deeper than"):
            load_json(text, "what")
    for text in ['"' + "x" * MAX_JSON_BYTES + '"', b"\xff", "{", "1" * 5000]:
        with pytest.raises(errdefs.InvalidArgument, match=r"^what: "):
            load_json(text, "what")


def test_error_fields_decode_totally() -> None:
    assert decode_error_field("j", None) is None
    err = decode_error_field("j", error_text(errdefs.NotFound("gone")))
    assert type(err) is errdefs.NotFound
    for text in ["[" * 100_000, "[]", '{"kind": 5}', "{"]:
        with pytest.raises(errdefs.InvalidArgument, match=r"^job j: malformed error record"):
            decode_error_field("j", text)
        assert error_from_text(text) is None  # the lenient reader: unreadable is absent


def test_check_record_types_the_fields_backends_write() -> None:
    good = {"kind": "pull", "ref": "layer-sha256:abc", "created_at": "1.0"}
    assert check_record("j", good) == good
    for bad in ({"kind": "other"}, {"ref": "r\n"}, {str(i): "" for i in range(MAX_FIELDS + 1)},
                {"plan": "x" * (MAX_JSON_BYTES + 1)}):  # fmt: skip
        with pytest.raises(errdefs.InvalidArgument, match=r"^job j: malformed job record"):
            check_record("j", bad)
