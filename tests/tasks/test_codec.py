"""The Celery error codec (tasks/codec.py) and the one reader of Celery's result keys
(tasks/results.py), on their own."""

from __future__ import annotations

import json

import pytest

from ingestq import errdefs
from ingestq.jobs.api import JobState
from ingestq.jobs.records import error_text
from ingestq.tasks import keys
from ingestq.tasks.codec import encode, error_from_celery_exc, error_from_meta
from ingestq.tasks.redisconn import redis_client
from ingestq.tasks.results import CeleryResults, state_of


class RefLocked(errdefs.Unavailable):
    """A refinement Celery must never see."""


def test_encode_gives_the_bare_registered_kind() -> None:
    err = errdefs.wrap(RefLocked("ref x locked", {"ref": "x"}), "ingest")
    clean = encode(err)
    assert type(clean) is errdefs.Unavailable
    assert (str(clean), clean.details, clean.__cause__) == (str(err), {"ref": "x"}, None)
    assert type(encode(ValueError("no"))) is errdefs.Unknown
    assert type(encode(FileNotFoundError(2, "gone"))) is errdefs.NotFound


@pytest.mark.parametrize("module", ["ingestq.errdefs", "errdefs"])
def test_celery_exception_fields_of_a_kind_decode_to_it(module: str) -> None:
    err = error_from_celery_exc(
        {"exc_type": "NotFound", "exc_module": module, "exc_message": ["blob x", {"d": "1"}]}
    )
    assert (type(err), str(err), err.details) == (errdefs.NotFound, "blob x: not found", {"d": "1"})
    alias = error_from_celery_exc(
        {"exc_type": "NotImplemented", "exc_module": module, "exc_message": ["no"]}
    )
    assert type(alias) is errdefs.Unimplemented


@pytest.mark.parametrize(
    ("obj", "text"),
    [
        ({"exc_type": "SystemExit", "exc_module": "builtins", "exc_message": [3]}, "SystemExit: 3"),
        ({"exc_type": "NotFound", "exc_module": "celery.exceptions", "exc_message": "x"},
         "NotFound: x"),
        ({"exc_type": "NoSuchKind", "exc_module": "errdefs"}, "NoSuchKind"),
        ({"exc_module": "errdefs"}, "error"),
        ("not a mapping", "job failed: 'not a mapping'"),
    ],
)  # fmt: skip
def test_anything_else_decodes_to_unknown(obj: object, text: str) -> None:
    err = error_from_celery_exc(obj)
    assert type(err) is errdefs.Unknown
    assert err.message == text


def test_error_from_meta_prefers_the_record_for_failures_only() -> None:
    failure = {"status": "FAILURE", "result": {"exc_type": "Unknown", "exc_module": "errdefs",
                                               "exc_message": ["celery's"]}}  # fmt: skip
    record = error_text(errdefs.DataLoss("record's"))
    assert type(error_from_meta("j", failure, record)) is errdefs.DataLoss
    assert error_from_meta("j", failure, None).message == "celery's"
    with pytest.raises(errdefs.InvalidArgument, match="job j: malformed error record"):
        error_from_meta("j", failure, "{garbage")  # a tampered record is no fallback
    retry = {"status": "RETRY", "result": {"exc_type": "Unavailable", "exc_module": "errdefs",
                                           "exc_message": ["locked"]}}  # fmt: skip
    assert type(error_from_meta("j", retry, record)) is errdefs.Unavailable
    revoked = error_from_meta("j", {"status": "REVOKED"}, record)
    assert type(revoked) is errdefs.Canceled and "job j" in str(revoked)


def test_results_are_read_raw_and_never_rebuilt_by_celery(redis_url: str) -> None:
    client = redis_client(redis_url, socket_timeout=5.0)
    results = CeleryResults(client)
    assert results.meta("none") is None
    client.set(keys.result_key("ok"), json.dumps({"status": "SUCCESS", "result": {"a": 1}}))
    assert results.meta("ok") == {"status": "SUCCESS", "result": {"a": 1}}
    client.set(keys.result_key("bad"), b"\xff not json")
    client.set(keys.result_key("list"), "[1, 2]")
    for job_id in ("bad", "list"):
        with pytest.raises(errdefs.InvalidArgument, match=f"job {job_id}: malformed result"):
            results.meta(job_id)
    assert state_of({"status": "WHATEVER"}) is JobState.UNKNOWN
    assert keys.result_key("x") == "celery-task-meta-x"
    client.close()
    with pytest.raises(errdefs.Unavailable):
        CeleryResults(redis_client("redis://127.0.0.1:1/0", socket_timeout=0.5)).meta("x")
