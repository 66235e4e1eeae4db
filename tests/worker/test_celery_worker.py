"""``ingestq.worker.celery_worker``: the ``celery worker`` options ``ingestq worker``
acts on, read by Celery's own parser, and the ones it refuses."""

from __future__ import annotations

from pathlib import Path

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


def test_a_refused_user_leaves_ingestq_worker_as_its_errdefs_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The user check runs inside Celery's command line (the app's worker option); what
    it raises reaches ``ingestq worker`` as the errdefs error itself (exit 19 for
    FailedPrecondition), and no worker starts."""
    from celery.bin import celery as celery_cli
    from celery.bin.worker import worker

    from ingestq.jobs.config import Settings
    from ingestq.tasks import privileges

    for command in (worker, celery_cli.beat, celery_cli.events):
        monkeypatch.setattr(command, "params", list(command.params))
    monkeypatch.setattr(worker, "callback", lambda **_: pytest.fail("the worker started"))
    settings = Settings.from_env(
        {"INGESTQ_REDIS_URL": "redis://127.0.0.1:1/0", "INGESTQ_ROOT": str(tmp_path)}
    )
    monkeypatch.setitem(app.conf, "ingestq_settings", settings)

    def refuse(uid: str | None, gid: str | None, paths: object) -> None:
        raise errdefs.FailedPrecondition(f"the worker's user (user {uid}) cannot read /x")

    monkeypatch.setattr(privileges, "check_drop", refuse)
    with pytest.raises(errdefs.FailedPrecondition, match=r"\(user nobody\) cannot read /x"):
        run_worker(extra=("--uid", "nobody"))
