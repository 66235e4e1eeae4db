"""The Celery app, configured on purpose for long, idempotent, resumable ingests.

``celery -A ingestq.tasks.app worker`` and ``ingestq worker`` run this app. Every setting is
chosen, not inherited (facts in ``celery-redis-locks.md``):

* JSON only (tasks, results, accepted content, events): no pickle anywhere.
* ``task_acks_late`` + ``worker_prefetch_multiplier=1``: at-least-once, and a worker
  holds only the message it runs.
* ``task_reject_on_worker_lost=True`` (not 5.7's ``task_retry_on_worker_lost``): when a
  pool child dies mid-ingest the message goes straight back to the queue and the next
  worker resumes from the stored offset. ``retry_on_worker_lost`` would instead wait
  ``default_retry_delay`` as an ETA message, store RETRY(WorkerLostError) (not an
  errdefs kind) and count against ``max_retries``, which the lock waits need unbounded.
  The loop hazard of reject (a task that always kills its process) is bounded here by
  streaming: an ingest holds one 1 MiB chunk in memory whatever the blob's size.
* ``visibility_timeout`` (default 12 h, ``INGESTQ_VISIBILITY_TIMEOUT``) far above the
  longest ingest, set for broker and result transport alike. Lock waits and source
  retries use ``self.retry`` countdowns of seconds (capped at ``INGESTQ_RETRY_CAP``),
  so ETA messages never approach it. Should a duplicate still run, the ref lease makes
  it wait and the content-addressed commit makes it a no-op.
* Redis sockets: broker and backend get a 30 s socket timeout (kombu's BRPOP polls
  every second; Celery's default of 120 s hides dead connections), a 5 s connect
  timeout, TCP keepalive (none on a unix socket), health checks, and no
  ``retry_on_timeout`` (ambiguous replays).
  Leases use their own clients (:func:`ingestq.tasks.redisconn.redis_client`).
* ``result_expires`` 7 days, ``result_extended`` (name, args, worker, retries in the
  meta), ``task_track_started``; ``result_backend_always_retry`` so a result written
  while Redis restarts is retried instead of lost. On Redis the backend is
  :class:`ingestq.tasks.backend.IngestqRedisBackend`: Celery's result write (a stored
  SUCCESS is never overwritten, SETEX, PUBLISH) in one round trip instead of two,
  which also releases the leases the task gave up.
* ``worker_deduplicate_successful_tasks``: a redelivered message whose id already
  shows SUCCESS is acked without running.
* Logging (:mod:`ingestq.tasks.joblog`): the tasks declare the expected errdefs kinds
  as ``throws`` (logged at INFO with kind and message, no traceback); the finalize
  poll's ``ignored`` lines are DEBUG; ``INGESTQ_JSON_LOGS=1`` makes every line JSON.
  Task events stay off unless the worker is started with ``-E``.
* Each worker's main process runs the orphan sweeper (:mod:`ingestq.tasks.sweeper`,
  started on ``worker_ready``; one sweeps at a time, under a Redis lease): the jobs of
  a whole worker that died go back on the queue within about a minute and a quarter,
  not after the visibility timeout.
* With ``INGESTQ_GC_INTERVAL`` set, each worker's main process also runs the periodic
  gc (:mod:`ingestq.tasks.gcrunner`; one runs at a time, under a Redis lease).
* A worker given ``--uid`` / ``--gid`` first checks that this user can read what the
  worker imports from (:mod:`ingestq.tasks.privileges`), before Celery detaches or
  drops privileges: else it stops at once, naming the path.

``errdefs`` is imported here so that every process that loads the app has the error
classes in ``sys.modules`` (Celery rebuilds exceptions from there only).

Imports celery, errdefs and the job settings (and, for the start-up check, this
package's runtime).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from celery import Celery, signals

from ingestq import errdefs
from ingestq.jobs.config import (
    REDIS_SCHEMES,
    Settings,
    SocketURL,
    hide_password,
    is_socket_url,
)
from ingestq.tasks import joblog

log = logging.getLogger(__name__)

QUEUE = "ingestq"
#: The result backend class for a Redis result URL (imported by Celery on first use).
RESULT_BACKEND = "ingestq.tasks.backend:IngestqRedisBackend"


def celery_url(url: str | None, *, backend: bool = False) -> str | None:
    """``url`` as Celery reads it: redis-py's Redis socket URL
    ``unix://[:PASSWORD@]/PATH[?db=N]`` is kombu's ``redis+socket://[:PASSWORD@]/PATH
    ?virtual_host=N`` (for ``backend``, this module's result backend class, the
    ``socket://`` form that Celery's Redis backend parses); any other URL as it is.
    InvalidArgument for a socket URL with another query than ``db``."""
    if url is None or not is_socket_url(url):
        return url
    sock = SocketURL.parse(url)
    scheme = "socket" if backend else "redis+socket"
    return f"{scheme}://{sock.netloc}{sock.path}?virtual_host={sock.db}"


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for ``settings`` (see the module docstring)."""
    vt = int(settings.visibility_timeout)
    transport = {
        "visibility_timeout": vt,
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 25,
        "unacked_restore_interval": settings.restore_interval,
        "unacked_restore_throttle": 1,
    }
    return {
        "broker_url": celery_url(settings.broker_url),
        "result_backend": celery_url(settings.result_url, backend=True),
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_track_started": True,
        "task_default_queue": QUEUE,
        "task_default_retry_delay": 5,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": vt},
        "visibility_timeout": vt,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "redis_socket_timeout": 30,
        "redis_socket_connect_timeout": 5,
        "redis_socket_keepalive": True,
        "redis_retry_on_timeout": False,
        "redis_backend_health_check_interval": 25,
        "result_backend_always_retry": True,
        "result_backend_max_retries": 60,
        "result_expires": settings.result_expires,
        "result_extended": True,
        "worker_deduplicate_successful_tasks": True,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "include": [
            "ingestq.tasks.ingest_task",
            "ingestq.tasks.batch_task",
            "ingestq.tasks.pull_task",
        ],
    }


def make_app(
    settings: Settings | None = None, main: str = "ingestq", *, results: bool = True
) -> Celery:
    """A Celery app for ``settings`` (default: from the environment). ``results=False``
    makes a producer's app, with no result backend: it publishes, and reads results
    itself (:class:`ingestq.tasks.results.CeleryResults`); Celery's Redis backend would
    otherwise subscribe to every sent task's result channel (celery#3808). Its workers
    check the user they drop to (:data:`ingestq.tasks.privileges.CHECK_OPTION`)."""
    from ingestq.tasks.privileges import CHECK_OPTION

    settings = settings or Settings.from_env()
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings))
    app.user_options["worker"].add(CHECK_OPTION)
    if not results:
        app.conf.result_backend = None
        app.backend_cls = "disabled"
    elif (settings.result_url or "").startswith(REDIS_SCHEMES):
        app.backend_cls = RESULT_BACKEND
    app.conf.ingestq_settings = settings
    return app


def settings_of(app: Celery) -> Settings:
    """The Settings an app was made with."""
    s = app.conf.get("ingestq_settings")
    return s if isinstance(s, Settings) else Settings.from_env()


#: The app ``celery -A ingestq.tasks.app worker`` runs, configured from the environment.
app = make_app()
app.set_current()


#: Why a worker without Redis does not start.
NO_REDIS = "a worker needs Redis: set INGESTQ_REDIS_URL (or INGESTQ_BROKER_URL)"


def preflight(settings: Settings, conf: Any = None) -> None:
    """Check what a worker of ``settings`` needs before it takes a message, so that a
    misconfigured worker stops at start instead of failing every job it takes: it
    builds what each pool process builds for its tasks
    (:func:`ingestq.tasks.runtime.make_runtime`: the store, the lease locker, the Redis
    clients). FailedPrecondition without Redis, or when ``conf`` (the Celery
    configuration the worker runs with) reads, writes or stores results elsewhere than
    ``settings`` say (Celery's ``-b``, ``--result-backend``, ``CELERY_BROKER_URL``,
    ``CELERY_BROKER_READ_URL``...: the worker would not see the queue its producers
    fill); the store's own error when it cannot be opened (FailedPrecondition for a root
    under a regular file, PermissionDenied, InvalidArgument for a malformed
    ``INGESTQ_STORE``, FailedPrecondition for ``s3://`` without boto3, ...);
    InvalidArgument for a lease ttl too short. Connects to nothing (an ``s3://`` store's
    client only looks up its credentials): a store or Redis that is down at start is
    waited for as at any other time."""
    if not settings.queued:
        raise errdefs.FailedPrecondition(NO_REDIS)
    if conf is not None:
        broker = celery_url(settings.broker_url)
        results = celery_url(settings.result_url, backend=True)
        for key, ours, env in (
            ("broker_url", broker, "INGESTQ_BROKER_URL"),
            ("broker_read_url", broker, "INGESTQ_BROKER_URL"),
            ("broker_write_url", broker, "INGESTQ_BROKER_URL"),
            ("result_backend", results, "INGESTQ_RESULT_URL"),
        ):
            theirs = getattr(conf, key)  # the property: it reads CELERY_BROKER_URL & co.
            if theirs != ours:
                raise errdefs.FailedPrecondition(
                    f"Celery's {key} is {hide_password(str(theirs))}, not "
                    f"{hide_password(str(ours))}: set {env} (or INGESTQ_REDIS_URL), "
                    f"not Celery's own option, so that producers and workers share one queue"
                )
    from ingestq.tasks.runtime import make_runtime  # it imports this module

    make_runtime(settings)


def _of_this_app(sender: Any) -> bool:
    """Whether a worker signal's sender (a WorkController) runs this module's app."""
    return getattr(sender, "app", None) is app


def _check_configuration(sender: Any = None, **_: Any) -> None:
    """worker_init of this app's workers (not of another app's in the same process):
    after Celery dropped privileges (``--uid``) and detached, before the pool starts."""
    if not _of_this_app(sender):
        return
    settings = settings_of(app)
    try:
        preflight(settings, app.conf)
    except Exception as e:
        err = errdefs.from_exception(e)
        # Celery sets its logging up after worker_init: without this, the reason would
        # only reach stderr, which --detach sends to /dev/null.
        setup_logging = getattr(sender, "setup_logging", None)
        if callable(setup_logging):
            with contextlib.suppress(Exception):
                setup_logging()
        log.critical("ingestq worker cannot start: %s", err)
        # Celery's signal dispatch logs and swallows an Exception; SystemExit stops the
        # worker before its pool starts or it consumes anything.
        raise SystemExit(f"ingestq worker cannot start: {err}") from err
    if settings.metrics_port is not None:
        from ingestq.tasks import metrics

        metrics.start_exporter(settings.metrics_port)


def _pool_process_exit(**_: Any) -> None:
    from ingestq.tasks import metrics

    metrics.process_exited(os.getpid())


_sweeper: Any = None


def _start_sweeper(sender: Any = None, **_: Any) -> None:
    """Start this worker's orphan sweeper (:mod:`ingestq.tasks.sweeper`) in the main
    process, unless ``INGESTQ_SWEEP_INTERVAL`` is 0."""
    global _sweeper
    settings = settings_of(app)
    node = getattr(sender, "hostname", None)
    if settings.sweep_interval <= 0 or not settings.queued or not node:
        return
    from ingestq.tasks.sweeper import Sweeper

    _sweeper = Sweeper(app, settings, str(node))
    _sweeper.start()


def _stop_sweeper(**_: Any) -> None:
    if _sweeper is not None:
        _sweeper.stop()


_gc_runner: Any = None


def _start_gc(sender: Any = None, **_: Any) -> None:
    """Start this worker's periodic gc (:mod:`ingestq.tasks.gcrunner`) in the main
    process when ``INGESTQ_GC_INTERVAL`` is set."""
    global _gc_runner
    settings = settings_of(app)
    node = getattr(sender, "hostname", None)
    if settings.gc_interval <= 0 or not settings.queued or not node:
        return
    from ingestq.tasks.gcrunner import GcRunner

    _gc_runner = GcRunner(settings, str(node))
    _gc_runner.start()


def _stop_gc(**_: Any) -> None:
    if _gc_runner is not None:
        _gc_runner.stop()


def _log_format(logger: logging.Logger | None = None, **_: Any) -> None:
    if logger is not None and os.environ.get(joblog.JSON_LOGS_ENV) == "1":
        joblog.install_json_logs(logger)


joblog.connect()
logging.getLogger("celery.app.trace").addFilter(joblog.QuietIgnored())
signals.after_setup_logger.connect(_log_format, weak=False)
signals.after_setup_task_logger.connect(_log_format, weak=False)
signals.worker_init.connect(_check_configuration, weak=False)
signals.worker_ready.connect(_start_sweeper, weak=False)
signals.worker_shutdown.connect(_stop_sweeper, weak=False)
signals.worker_ready.connect(_start_gc, weak=False)
signals.worker_shutdown.connect(_stop_gc, weak=False)
signals.worker_process_shutdown.connect(_pool_process_exit, weak=False)
