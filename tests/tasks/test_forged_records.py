"""Tampered records in a real Redis read back through the producer API and the CLI:
every one is InvalidArgument naming the job (exit code 13), never a traceback, however
deep, large or mistyped it is."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ingestq import errdefs
from ingestq.jobs.api import JobState
from ingestq.jobs.records import MAX_JSON_BYTES, error_text
from ingestq.tasks import keys
from ingestq.tasks.client import get_job, get_pull
from ingestq.worker.cli import cli
from ingestq.worker.cli.common import EXIT_CODES
from tests.tasks.conftest import Cluster

DEEP = 100_000
NOW = "2026-01-01T00:00:00+00:00"
INFO: dict[str, Any] = {"digest": "sha256:" + "a" * 64, "size": 3, "created_at": NOW,
                        "updated_at": NOW, "labels": {}}  # fmt: skip
ERRDEFS_FAILURE = {"exc_type": "NotFound", "exc_module": "ingestq.errdefs",
                   "exc_message": ["gone"]}  # fmt: skip


def deep_json(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def meta(status: str, result: Any) -> str:
    return json.dumps({"status": status, "result": result})


#: Result metas (``celery-task-meta-<id>``) and whether ``state`` still reads (the meta
#: itself is well formed; only the Info it carries is not).
METAS: dict[str, tuple[str | bytes, bool]] = {
    "error nested 100000 deep": (
        '{"status": "FAILURE", "result": {"exc_type": "NotFound", "exc_module": '
        f'"ingestq.errdefs", "exc_message": {deep_json()}}}}}',
        False,
    ),
    "success result a list": (meta("SUCCESS", [1, 2]), False),
    "success size a": (meta("SUCCESS", {**INFO, "size": "a"}), True),
    "success size a numeric string": (meta("SUCCESS", {**INFO, "size": "3"}), True),
    "success label value an object": (meta("SUCCESS", {**INFO, "labels": {"k": {}}}), True),
    "status a number": (json.dumps({"status": 5, "result": None}), False),
    "exc_type a list": (meta("FAILURE", {**ERRDEFS_FAILURE, "exc_type": ["NotFound"]}), False),
    "exc_message an object": (meta("RETRY", {**ERRDEFS_FAILURE, "exc_message": {}}), False),
    "not JSON": (b"\xff{", False),
    "over the size limit": (meta("SUCCESS", {**INFO, "pad": "x" * MAX_JSON_BYTES}), False),
}


def _cli(cluster: Cluster, *args: str) -> Result:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("INGESTQ_")}
    env.update(INGESTQ_REDIS_URL=cluster.redis_url, INGESTQ_ROOT=str(cluster.root))
    return CliRunner().invoke(cli, list(args), env=env)


def assert_reported(result: Result, job_id: str) -> None:
    """The CLI exited with InvalidArgument's code, naming the job, without a traceback."""
    assert result.exit_code == EXIT_CODES["InvalidArgument"] == 13, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert f"ingestq: InvalidArgument: job {job_id}: malformed" in result.output
    assert "Traceback" not in result.output


def forge(cluster: Cluster, job_id: str, raw_meta: str | bytes | None, **record: str) -> None:
    redis = cluster.client.client
    if raw_meta is not None:
        redis.set(keys.result_key(job_id), raw_meta)
    redis.hset(keys.job_key(job_id), mapping={"kind": "ingest", "ref": "r", **record})


@pytest.mark.parametrize(("raw", "state_reads"), METAS.values(), ids=METAS.keys())
def test_a_forged_result_is_invalid_argument_naming_the_job(
    cluster: Cluster, raw: str | bytes, state_reads: bool
) -> None:
    forge(cluster, "forged", raw)
    job = get_job("forged", client=cluster.client)
    with pytest.raises(errdefs.InvalidArgument, match="job forged: malformed"):
        job.wait(timeout=5)
    if state_reads:
        assert job.state is JobState.SUCCEEDED
    else:
        with pytest.raises(errdefs.InvalidArgument, match="job forged: malformed"):
            _ = job.state
    assert_reported(_cli(cluster, "job", "status", "forged"), "forged")
    assert_reported(_cli(cluster, "job", "wait", "forged", "--timeout", "5"), "forged")


#: Job record fields (``ingestq:job:<id>``), next to a well-formed FAILURE meta.
RECORDS: dict[str, dict[str, str]] = {
    "error record nested 100000 deep": {"error": deep_json()},
    "error record not JSON": {"error": "{"},
    "error record of the wrong shape": {"error": json.dumps({"kind": ["NotFound"]})},
    "ref with a trailing newline": {"ref": "r\n"},
    "unknown kind": {"kind": "bogus"},
}


@pytest.mark.parametrize("record", RECORDS.values(), ids=RECORDS.keys())
def test_a_forged_job_record_is_invalid_argument_naming_the_job(
    cluster: Cluster, record: dict[str, str]
) -> None:
    forge(cluster, "forged", meta("FAILURE", ERRDEFS_FAILURE), **record)
    job = get_job("forged", client=cluster.client)
    with pytest.raises(errdefs.InvalidArgument, match="job forged: malformed"):
        job.wait(timeout=5)
    assert_reported(_cli(cluster, "job", "status", "forged"), "forged")
    assert_reported(_cli(cluster, "job", "wait", "forged", "--timeout", "5"), "forged")


def test_a_well_formed_failure_still_reads_as_its_kind(cluster: Cluster) -> None:
    forge(cluster, "fine", meta("FAILURE", ERRDEFS_FAILURE),
          error=error_text(errdefs.NotFound("record's")))  # fmt: skip
    job = get_job("fine", client=cluster.client)
    assert job.state is JobState.FAILED
    with pytest.raises(errdefs.NotFound, match="record's"):
        job.wait(timeout=5)
    result = _cli(cluster, "job", "status", "fine")
    assert result.exit_code == 0 and "failed" in result.output


@pytest.mark.parametrize(
    "plan", [deep_json(), "[]", json.dumps({"name": "x", "target": [1]})],
    ids=["nested 100000 deep", "a list", "a target that is no descriptor"],
)  # fmt: skip
def test_a_forged_pull_plan_is_invalid_argument_naming_the_job(cluster: Cluster, plan: str) -> None:
    cluster.client.client.hset(keys.job_key("pull"), mapping={"kind": "pull", "plan": plan})
    job = get_pull("pull", client=cluster.client)
    with pytest.raises(errdefs.InvalidArgument, match="job pull: malformed pull plan"):
        job.status()
    with pytest.raises(errdefs.InvalidArgument, match="job pull: malformed pull plan"):
        job.plan()
    job.cancel()  # the pull itself is still canceled
    assert cluster.client.records.cancel_requested("pull")


def test_a_forged_status_board_entry_is_ignored(cluster: Cluster) -> None:
    """A live-status hash with timestamps out of range reads as no live status."""
    forge(cluster, "queued", None, ref="board")
    cluster.client.client.hset(
        keys.ref_keys("board").status,
        mapping={"ref": "board", "offset": "1", "started_at": "9" * 20, "updated_at": "1"},
    )
    job = get_job("queued", client=cluster.client)
    assert (job.state, job.progress) == (JobState.QUEUED, None)
    result = _cli(cluster, "job", "status", "queued")
    assert result.exit_code == 0 and "queued" in result.output, result.output
