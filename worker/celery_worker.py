"""Bootstrap of a Celery worker running the project's app (``ingestq.tasks.app``).

``ingestq worker`` calls :func:`run_worker`; ``celery -A ingestq.tasks.app worker`` runs the
very same app and configuration. Signals (configuration check, metrics exporter, pool
process exit) are connected in :mod:`ingestq.tasks.app`, so both entry points behave the same.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence


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


def run_worker(
    *,
    concurrency: int | None = None,
    pool: str = "prefork",
    loglevel: str = "INFO",
    hostname: str | None = None,
    metrics_port: int | None = None,
    extra: Sequence[str] = (),
) -> None:
    """Run a worker in this process until it is shut down (TERM/INT: warm shutdown)."""
    if metrics_port is not None:
        # Before tasks.metrics is imported: it picks the multiprocess mode from this.
        os.environ["INGESTQ_METRICS_PORT"] = str(metrics_port)
    from ingestq.tasks.app import app

    app.worker_main(
        worker_argv(
            concurrency=concurrency, pool=pool, loglevel=loglevel, hostname=hostname, extra=extra
        )
    )
