"""Bootstrap of a Celery worker running the project's app (``ingestq.tasks.app``).

``ingestq worker`` calls :func:`run_worker`; ``celery -A ingestq.tasks.app worker`` runs the
very same app and configuration. Signals (configuration check, metrics exporter, pool
process exit) are connected in :mod:`ingestq.tasks.app`, so both entry points behave the same.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery


def worker_argv(
    *,
    concurrency: int | None = None,
    pool: str = "prefork",
    loglevel: str = "INFO",
    hostname: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``celery worker`` arguments ``ingestq worker`` uses."""
    from ingestq.tasks.app import QUEUE

    argv = ["worker", f"--pool={pool}", f"--loglevel={loglevel}", "-Q", QUEUE]
    if concurrency is not None:
        argv.append(f"--concurrency={concurrency}")
    argv.append(f"--hostname={hostname or f'ingestq-{os.getpid()}@{socket.gethostname()}'}")
    argv.extend(extra)
    return argv


@dataclass(frozen=True)
class WorkerOptions:
    """What ``ingestq worker`` acts on among the ``celery worker`` options it passes on:
    the user and group to drop to (None: stay), detaching, task events."""

    uid: str | None = None
    gid: str | None = None
    detach: bool = False
    task_events: bool = False


def worker_options(app: Celery, argv: Sequence[str]) -> WorkerOptions:
    """``argv`` (``celery worker`` options) read by Celery's own parser, as Celery will
    read them (``-DE`` is ``--detach --task-events``; ``--uid=`` drops nothing).
    InvalidArgument with Celery's message for what it would refuse (an unknown option,
    a missing or bad value)."""
    import click
    from celery.bin.base import CLIContext
    from celery.bin.worker import worker

    from ingestq import errdefs
    from ingestq.tasks.privileges import DropCheckFailed

    obj = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
    try:
        with worker.make_context("worker", list(argv), obj=obj) as ctx:
            params = ctx.params
    except DropCheckFailed as e:
        # Celery adds the app's options (the user check) to its command when its command
        # line runs: only a process that ran one already checks here.
        raise e.error from None
    except click.ClickException as e:
        raise errdefs.InvalidArgument(f"celery worker options: {e.format_message()}") from None
    return WorkerOptions(
        uid=params.get("uid") or None,
        gid=params.get("gid") or None,
        detach=bool(params.get("detach")),
        task_events=bool(params.get("task_events")),
    )


def banner(root: str, file_roots: Sequence[str], metrics_port: int | None) -> str:
    """What ``ingestq worker`` prints before Celery's own banner."""
    roots = ", ".join(file_roots) or "anywhere"
    port = str(metrics_port) if metrics_port is not None else "off"
    return f"ingestq worker: store root {root}, file roots {roots}, metrics port {port}"


def run_worker(
    *,
    concurrency: int | None = None,
    pool: str = "prefork",
    loglevel: str = "INFO",
    hostname: str | None = None,
    metrics_port: int | None = None,
    extra: Sequence[str] = (),
    json_logs: bool = False,
) -> None:
    """Run a worker in this process until it is shut down (TERM/INT: warm shutdown).

    ``extra`` are further ``celery worker`` options, passed through; ``-E`` /
    ``--task-events`` also makes the tasks this worker publishes send ``task-sent``
    events (for Flower). ``json_logs``: one JSON object per log line
    (:mod:`ingestq.tasks.joblog`). Prints :func:`banner` to stderr first. Raises what
    :func:`ingestq.tasks.app.preflight` finds (no Redis, a store that cannot be opened,
    Celery options that name another broker) before the worker takes anything, and with
    ``--uid`` / ``--gid`` among ``extra`` what :func:`ingestq.tasks.privileges.check_drop`
    raises (a user that cannot read the Python installation) before Celery drops to it.
    InvalidArgument for ``extra`` that Celery would refuse (:func:`worker_options`) and
    for ``-D`` / ``--detach``: Celery's detach re-executes ``python -m celery`` with
    these arguments, which name no app."""
    if metrics_port is not None:
        # Before tasks.metrics is imported: it picks the multiprocess mode from this.
        os.environ["INGESTQ_METRICS_PORT"] = str(metrics_port)
    if json_logs:
        os.environ["INGESTQ_JSON_LOGS"] = "1"
    from ingestq import errdefs
    from ingestq.tasks.app import NO_REDIS, app, settings_of
    from ingestq.tasks.privileges import DropCheckFailed

    options = worker_options(app, extra)
    if options.detach:
        raise errdefs.InvalidArgument(
            "ingestq worker does not detach (-D/--detach): run it under a service manager "
            "(systemd, a container), or use celery -A ingestq.tasks.app worker --detach"
        )
    settings = settings_of(app)
    if not settings.queued:
        raise errdefs.FailedPrecondition(NO_REDIS)
    if options.task_events:
        app.conf.update(worker_send_task_events=True, task_send_sent_event=True)
    port = settings.metrics_port if metrics_port is None else metrics_port
    file_roots = [str(r) for r in settings.file_roots or ()]
    print(banner(str(settings.root), file_roots, port), file=sys.stderr, flush=True)

    try:
        app.worker_main(
            worker_argv(
                concurrency=concurrency, pool=pool, loglevel=loglevel, hostname=hostname,
                extra=extra,
            )
        )  # fmt: skip
    except DropCheckFailed as e:
        # The user check, run while Celery reads the --uid / --gid options.
        raise e.error from None
    except SystemExit as e:
        # The app's start-up check (run by Celery after it dropped privileges with
        # --uid, so the store is opened as the worker's user) stops the worker this way.
        if isinstance(e.__cause__, errdefs.ErrdefsError):
            raise e.__cause__ from None
        raise
