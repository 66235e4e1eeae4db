"""A pull's last child to succeed starts the pull's finalize at once (``early``) instead
of leaving the image to the next poll: each child's success is counted off the pull's
record (``pending``, a real Redis), and the count's reaching zero publishes the
finalize. The polls stay as they were, so a pull whose children were counted wrongly
(a redelivered pull, a record written by an older version) still ends."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from ingestq.tasks import keys, pull_task
from ingestq.tasks.app import app as celery_app
from ingestq.tasks.names import TASK_INGEST, TASK_PULL
from ingestq.tasks.records import PENDING_FIELD, RedisJobRecords
from tests.servers.util import wait_until


@pytest.fixture
def records(redis_url: str) -> RedisJobRecords:
    return RedisJobRecords(redis.Redis.from_url(redis_url), 3600)


def test_children_are_counted_off_and_a_missing_count_creates_nothing(
    records: RedisJobRecords, redis_url: str
) -> None:
    records.create("pull-1", {"kind": "pull"})
    records.update("pull-1", {PENDING_FIELD: "2"})
    assert [records.child_succeeded("pull-1") for _ in range(3)] == [1, 0, -1]
    records.create("pull-2", {"kind": "pull"})  # no count: written by an older version
    assert records.child_succeeded("pull-2") is None
    assert PENDING_FIELD not in records.get("pull-2")
    assert records.child_succeeded("gone") is None  # expired: not brought back
    r = redis.Redis.from_url(redis_url)
    try:
        assert not r.exists(keys.job_key("gone"))
        assert r.ttl(keys.job_key("pull-1")) > 0  # the count keeps the record's expiry
    finally:
        r.close()


def test_the_last_child_publishes_the_finalize_early(
    records: RedisJobRecords, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = {"name": "example.com/app:v1", "children": []}
    records.create("pull-1", {"kind": "pull", "plan": json.dumps(plan), PENDING_FIELD: "2"})
    monkeypatch.setattr(pull_task, "runtime", lambda: SimpleNamespace(records=records))
    published: list[dict[str, Any]] = []
    monkeypatch.setattr(pull_task.pull_finalize_task, "apply_async",
                        lambda **kw: published.append(kw))  # fmt: skip

    def succeeded(name: str, kwargs: dict[str, Any], app: object = celery_app) -> None:
        sender = SimpleNamespace(name=name, app=app, request=SimpleNamespace(kwargs=kwargs))
        pull_task._child_succeeded(sender=sender, result={})

    succeeded(TASK_INGEST, {})  # not a pull's child
    succeeded(TASK_PULL, {"parent": "pull-1"})  # not an ingest
    succeeded(TASK_INGEST, {"parent": "pull-1"}, app=object())  # another app's task
    succeeded(TASK_INGEST, {"parent": "pull-1"})
    assert published == []  # one child still pending
    succeeded(TASK_INGEST, {"parent": "pull-1"})
    assert published == [{"args": [plan], "kwargs": {"early": True}, "task_id": "pull-1",
                          "queue": "ingestq"}]  # fmt: skip
    succeeded(TASK_INGEST, {"parent": "pull-1"})  # a redelivered child: nothing more
    assert len(published) == 1


def test_one_finalize_of_a_pull_holds_its_claim_until_it_expires(
    records: RedisJobRecords,
) -> None:
    assert records.claim_finalize("pull-1", 0.3)
    assert not records.claim_finalize("pull-1", 0.3)  # the other finalize waits for a poll
    assert records.claim_finalize("pull-2", 0.3)  # per pull
    # A finalize killed while holding it delays the pull by at most the claim's time.
    wait_until(lambda: records.claim_finalize("pull-1", 60), 10, "the claim expired")
