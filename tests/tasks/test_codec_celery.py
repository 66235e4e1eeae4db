"""Every errdefs kind survives Celery's exception handling with the json result
serializer, and the codec normalizes what Celery synthesises when it cannot."""

from __future__ import annotations

import json
import pickle
import uuid
from typing import Any

import celery
import pytest
from celery.utils.serialization import get_pickleable_exception

from ingestq import errdefs
from ingestq.tasks.codec import normalize

KINDS = list(errdefs.KINDS.values())
IDS = list(errdefs.KINDS)


@pytest.fixture(scope="module")
def app() -> celery.Celery:
    return celery.Celery(
        "errdefs-tests",
        backend="cache+memory://",
        result_serializer="json",
        accept_content=["json"],
    )


def json_round_trip(app: celery.Celery, exc: BaseException) -> Any:
    stored = app.backend.prepare_exception(exc)
    return app.backend.exception_to_python(json.loads(json.dumps(stored)))


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_kept_as_is_by_get_pickleable_exception(cls: type[errdefs.ErrdefsError]) -> None:
    err = cls("content x", {"digest": "sha256:ab"})
    assert get_pickleable_exception(err) is err
    assert type(pickle.loads(pickle.dumps(err))) is cls


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_stored_form_names_the_public_module(
    app: celery.Celery, cls: type[errdefs.ErrdefsError]
) -> None:
    stored = app.backend.prepare_exception(cls("content x", {"k": "v"}))
    assert stored == {
        "exc_type": cls.__name__,
        "exc_message": ("content x", {"k": "v"}),
        "exc_module": "ingestq.errdefs",
    }


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
@pytest.mark.parametrize("details", [None, {"digest": "sha256:ab", "ref": "layer-1"}])
def test_json_exception_format_round_trips(
    app: celery.Celery, cls: type[errdefs.ErrdefsError], details: dict[str, str] | None
) -> None:
    err = errdefs.wrap(cls("content x", details), "commit")
    back = json_round_trip(app, err)
    assert type(back) is cls
    assert str(back) == str(err)
    assert back.details == err.details
    assert back.args == err.args


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_failed_task_result_round_trips_through_backend(
    app: celery.Celery, cls: type[errdefs.ErrdefsError]
) -> None:
    task_id = str(uuid.uuid4())
    err = cls("content x", {"k": "v"})
    app.backend.mark_as_failure(task_id, err)
    result = app.AsyncResult(task_id)
    assert result.state == "FAILURE"
    back = result.result
    assert (type(back), str(back), back.details) == (cls, str(err), {"k": "v"})
    with pytest.raises(cls) as raised:
        result.get(timeout=1)
    assert str(raised.value) == str(err)


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_synthesised_when_module_missing_then_normalized(
    app: celery.Celery, cls: type[errdefs.ErrdefsError]
) -> None:
    stored = json.loads(json.dumps(app.backend.prepare_exception(cls("content x", {"k": "v"}))))
    stored["exc_module"] = "ingestq_module_not_imported"
    synthesised = app.backend.exception_to_python(stored)
    assert type(synthesised) is not cls
    assert type(synthesised).__module__ == "celery.exceptions"
    assert type(synthesised).__name__ == cls.__name__
    back = normalize(synthesised)
    assert (type(back), str(back), back.details) == (cls, str(cls("content x")), {"k": "v"})


def test_module_not_recorded_then_normalized(app: celery.Celery) -> None:
    synthesised = app.backend.exception_to_python(
        {"exc_type": "Unavailable", "exc_message": ["ref x locked", None], "exc_module": None}
    )
    assert type(synthesised).__module__ == "celery.backends.base"
    back = normalize(synthesised)
    assert (type(back), str(back)) == (errdefs.Unavailable, "ref x locked: unavailable")


def test_backend_planted_system_exit_normalizes_to_unknown(app: celery.Celery) -> None:
    planted = app.backend.exception_to_python(
        {"exc_type": "SystemExit", "exc_message": ["bye"], "exc_module": "builtins"}
    )
    assert type(planted) is SystemExit
    back = normalize(planted)
    assert (type(back), back.message) == (errdefs.Unknown, "bye")
