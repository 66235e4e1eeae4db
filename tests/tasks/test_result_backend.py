"""The result backend's one-script write (tasks/backend.py) and the lease releases it
carries (tasks/lease.py ``defer_releases``), against a real redis-server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import redis
from celery import Celery, states

from ingestq.jobs.config import Settings
from ingestq.tasks import keys, lease
from ingestq.tasks.app import make_app
from ingestq.tasks.backend import IngestqRedisBackend
from ingestq.tasks.lease import RedisLeaseLocker


@pytest.fixture
def app(redis_url: str) -> Iterator[Celery]:
    app = make_app(Settings(broker_url=redis_url, result_url=redis_url, lock_url=redis_url))
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(autouse=True)
def no_deferral() -> Iterator[None]:
    yield
    lease.flush_releases()


def _meta(r: redis.Redis, task_id: str) -> dict[str, object]:
    raw = r.get(keys.result_key(task_id))
    assert isinstance(raw, bytes)
    meta = json.loads(raw)
    assert isinstance(meta, dict)
    return meta


def test_the_app_stores_results_with_the_one_script_backend(app: Celery, r: redis.Redis) -> None:
    assert isinstance(app.backend, IngestqRedisBackend)
    app.backend.store_result("t-0", {}, states.SUCCESS)  # loads the script
    r.config_resetstat()
    app.backend.store_result("t-1", {"digest": "sha256:ab"}, states.SUCCESS)
    meta = _meta(r, "t-1")
    assert (meta["status"], meta["result"], meta["task_id"]) == (
        "SUCCESS", {"digest": "sha256:ab"}, "t-1",
    )  # fmt: skip
    assert 0 < r.ttl(keys.result_key("t-1")) <= app.conf.result_expires
    stats = r.info("commandstats")
    # One EVALSHA; inside it Celery's GET guard, SETEX and PUBLISH; no MULTI.
    assert stats["cmdstat_evalsha"]["calls"] == 1, stats
    assert "cmdstat_multi" not in stats, stats
    assert stats["cmdstat_setex"]["calls"] == stats["cmdstat_publish"]["calls"] == 1, stats


def test_a_stored_success_is_never_overwritten(app: Celery, r: redis.Redis) -> None:
    app.backend.store_result("t-2", {"n": 1}, states.SUCCESS)
    app.backend.store_result("t-2", {"pid": 1, "hostname": "h"}, states.STARTED)
    assert _meta(r, "t-2")["status"] == "SUCCESS"
    app.backend.store_result("t-3", {"pid": 1, "hostname": "h"}, states.STARTED)
    app.backend.store_result("t-3", {"n": 2}, states.SUCCESS)
    assert _meta(r, "t-3")["result"] == {"n": 2}


def test_a_malformed_stored_meta_is_overwritten(app: Celery, r: redis.Redis) -> None:
    r.set(keys.result_key("t-4"), b"not json")
    app.backend.store_result("t-4", {"n": 4}, states.SUCCESS)
    assert _meta(r, "t-4")["result"] == {"n": 4}


def test_a_put_off_release_runs_in_the_result_write(
    app: Celery, r: redis.Redis, redis_url: str
) -> None:
    app.backend.store_result("t-0", {}, states.SUCCESS)  # loads the script
    locker = RedisLeaseLocker(redis_url, ttl=30)
    held = locker.try_lock("ref-d", "me")
    lease.defer_releases()
    held.release()
    assert r.exists(keys.ref_keys("ref-d").lease) == 1  # put off: still there
    assert locker.held("ref-d") is None  # no longer renewed
    r.config_resetstat()
    app.backend.store_result("t-5", {"n": 5}, states.SUCCESS)
    assert r.exists(keys.ref_keys("ref-d").lease, keys.ref_keys("ref-d").holder) == 0
    assert _meta(r, "t-5")["status"] == "SUCCESS"
    assert r.info("commandstats")["cmdstat_evalsha"]["calls"] == 1
    assert lease.take_releases() == []


def test_a_release_the_result_write_did_not_run_runs_at_the_flush(
    r: redis.Redis, redis_url: str
) -> None:
    locker = RedisLeaseLocker(redis_url, ttl=30)
    held = locker.try_lock("ref-f", "me")
    lease.defer_releases()
    held.release()
    assert r.exists(keys.ref_keys("ref-f").lease) == 1
    lease.flush_releases()
    assert r.exists(keys.ref_keys("ref-f").lease) == 0
    again = locker.try_lock("ref-f", "me")  # not deferred any more
    again.release()
    assert r.exists(keys.ref_keys("ref-f").lease) == 0


def test_locking_a_ref_again_runs_its_put_off_release_first(r: redis.Redis, redis_url: str) -> None:
    locker = RedisLeaseLocker(redis_url, ttl=30)
    first = locker.try_lock("ref-a", "me")
    lease.defer_releases()
    first.release()
    second = locker.try_lock("ref-a", "me")  # not "locked" by our own put-off release
    assert second.fence > first.fence
    second.release()
    lease.flush_releases()
    assert r.exists(keys.ref_keys("ref-a").lease) == 0


def test_releases_of_another_redis_are_left_for_the_flush(
    app: Celery, r: redis.Redis, redis_url: str
) -> None:
    other_url = redis_url.rsplit("/", 1)[0] + "/1"  # another database: another URL
    other = redis.Redis.from_url(other_url)
    try:
        locker = RedisLeaseLocker(other_url, ttl=30)
        held = locker.try_lock("ref-o", "me")
        lease.defer_releases()
        held.release()
        app.backend.store_result("t-6", {"n": 6}, states.SUCCESS)
        assert other.exists(keys.ref_keys("ref-o").lease) == 1
        lease.flush_releases()
        assert other.exists(keys.ref_keys("ref-o").lease) == 0
    finally:
        other.flushdb()
        other.close()


def test_deferral_is_per_thread(r: redis.Redis, redis_url: str) -> None:
    locker = RedisLeaseLocker(redis_url, ttl=30)
    lease.defer_releases()

    def elsewhere() -> None:
        locker.try_lock("ref-t", "me").release()

    t = threading.Thread(target=elsewhere)
    t.start()
    t.join()
    assert r.exists(keys.ref_keys("ref-t").lease) == 0
