"""``ingestq.worker.celery_worker``: the ``celery worker`` options ``ingestq worker``
acts on, read by Celery's own parser, and the ones it refuses."""

from __future__ import annotations

import pytest

from ingestq import errdefs
from ingestq.tasks.app import app
from ingestq.worker.celery_worker import WorkerOptions, run_worker, worker_options


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ((), WorkerOptions()),
        (("--without-gossip", "-Q", "ingestq"), WorkerOptions()),
        (("--uid", "nobody"), WorkerOptions(uid="nobody")),
        (("--uid=65534", "--gid", "nogroup"), WorkerOptions(uid="65534", gid="nogroup")),
        (("--gid=100", "--uid", "a", "--uid", "b"), WorkerOptions(uid="b", gid="100")),
        (("--uid=",), WorkerOptions()),  # Celery drops nothing for an empty value
        (("-E",), WorkerOptions(task_events=True)),
        (("--task-events", "-D"), WorkerOptions(task_events=True, detach=True)),
        # Short flags together, and a short option's value in the same word: -Q's value
        # "D" is a queue name, not the detach flag.
        (("-DE",), WorkerOptions(detach=True, task_events=True)),
        (("-EQD", "--uid", "nobody"), WorkerOptions(task_events=True, uid="nobody")),
        (("-Q", "-D"), WorkerOptions()),
    ],
)
def test_options_are_read_as_celery_reads_them(
    argv: tuple[str, ...], expected: WorkerOptions
) -> None:
    assert worker_options(app, argv) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--uid",), "'--uid' requires an argument"),
        (("-E", "--gid"), "'--gid' requires an argument"),
        (("--uidx", "nobody"), "No such option"),
        (("-c", "many"), "Invalid value for '-c'"),
    ],
)
def test_options_celery_would_refuse_are_invalid(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=message):
        worker_options(app, argv)


@pytest.mark.parametrize("argv", [("-D",), ("--detach",), ("-ED",), ("--uid", "nobody", "-DE")])
def test_detaching_is_refused_before_anything_starts(
    argv: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery's detach re-executes ``python -m celery`` with these arguments, which name
    no app: ``ingestq worker`` refuses it, however the flag is written, before it checks
    anything else or starts Celery."""

    def started(*_: object, **__: object) -> None:
        raise AssertionError("the worker started")

    monkeypatch.setattr(app, "worker_main", started)
    with pytest.raises(errdefs.InvalidArgument, match="does not detach"):
        run_worker(extra=argv)
