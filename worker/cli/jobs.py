"""``ingestq`` commands for jobs: ``ingest``, ``job status|wait|cancel``, ``active`` and
``worker``.

Without Redis configured (no ``INGESTQ_REDIS_URL``/``INGESTQ_BROKER_URL``) ``ingest``
runs the job in this process (the embedded default) and ``active`` lists the store's
ingests; with Redis, ``ingest`` enqueues for the workers and waits unless ``--detach``.
Errors exit with 10 + the gRPC code of their kind (see ``ingestq --help``).

Without ``--digest`` the bytes are hashed while they are fetched and committed under
the digest they turn out to have; the ref is then ``source-<sha256 of the source>``, so
a re-run of the same URL resumes the same ingest.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ingestq import errdefs
from ingestq.worker.cli.common import (
    echo_json,
    handle_errors,
    max_bytes_option,
    parse_labels,
    root_option,
    store_budget,
)
from ingestq.worker.cli.progress import line

if TYPE_CHECKING:
    from ingestq.jobs.api import IngestJob, JobClient
    from ingestq.jobs.config import Settings
    from ingestq.store.values import Info


def _settings(root: Path | None, max_bytes: str | None = None) -> Settings:
    from ingestq.jobs.config import Settings

    settings = Settings.from_env()
    budget = store_budget(max_bytes, settings.budget)
    settings = dataclasses.replace(settings, budget=budget)
    return dataclasses.replace(settings, root=root) if root is not None else settings


def _client(root: Path | None, max_bytes: str | None = None) -> JobClient:
    from ingestq.tasks.client import connect

    return connect(_settings(root, max_bytes))


def _info_json(info: Info, job: IngestJob) -> dict[str, Any]:
    from ingestq.store.codec import info_to_json

    return {"job": job.id, "ref": job.ref, **info_to_json(info)}


def _wait(job: IngestJob, timeout: float | None, as_json: bool, in_process: bool) -> None:
    """Wait for ``job``, drawing progress on a TTY; print the result. Interrupted, a job
    running in this process is canceled and kept for a resume; a queued job goes on on
    the workers."""
    try:
        _wait_and_print(job, timeout, as_json)
    except KeyboardInterrupt:
        if in_process:
            job.cancel()
        raise


def _wait_and_print(job: IngestJob, timeout: float | None, as_json: bool) -> None:
    tty = sys.stderr.isatty() and not as_json
    deadline = None if timeout is None else time.monotonic() + timeout
    if tty:
        while True:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                info = job.wait(min(0.5, remaining) if remaining is not None else 0.5)
                break
            except errdefs.DeadlineExceeded:
                if remaining is not None and remaining <= 0.5:
                    raise
                p = job.progress
                if p is not None:
                    click.echo("\r" + line(job.ref[:40], p.offset, p.total, 0.0, True), nl=False,
                               err=True)  # fmt: skip
        click.echo("", err=True)
    else:
        info = job.wait(timeout)
    if as_json:
        echo_json(_info_json(info, job))
    else:
        click.echo(str(info.digest))


@click.command("ingest")
@click.argument("source")
@click.option("--digest", default=None, help="Expected digest (alg:hex); computed if omitted.")
@click.option("--size", type=click.IntRange(min=0), default=0, help="Expected size in bytes.")
@click.option("--ref", default=None, help="Ingest ref (default: containerd's ref key).")
@click.option("--media-type", default="application/octet-stream", show_default=True)
@click.option("--label", "labels", multiple=True, help="k=v label for the blob (repeatable).")
@click.option(
    "--expire",
    default=None,
    metavar="DURATION",
    help="Let gc remove the blob after DURATION (30s, 10m, 7d) unless something else uses it.",
)
@click.option("--wait/--detach", default=True, help="Wait for the job (default) or return.")
@click.option("--timeout", type=float, default=None, help="Give up waiting after N seconds.")
@click.option("--job-id", default=None, help="Choose the job id.")
@click.option("--idempotency-key", default=None, help="Enqueue at most once per key.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@root_option
@max_bytes_option
@handle_errors
def ingest_cmd(
    source: str,
    digest: str | None,
    size: int,
    ref: str | None,
    media_type: str,
    labels: tuple[str, ...],
    expire: str | None,
    wait: bool,
    timeout: float | None,
    job_id: str | None,
    idempotency_key: str | None,
    as_json: bool,
    root: Path | None,
    max_bytes: str | None,
) -> None:
    """Ingest SOURCE (an http(s) URL or a file path) into the store.

    Prints the blob's digest (or, with --detach, the job id). gc keeps the blob (until
    --expire's time, when given). An ingest that does not fit in the disk budget fails
    with ResourceExhausted (exit 18): before fetching when its size is known, at the
    limit (kept for a resume) otherwise."""
    from ingestq.tasks.client import enqueue_ingest

    client = _client(root, max_bytes)
    if not wait and client.in_process:
        raise errdefs.InvalidArgument(
            "--detach needs a queue: set INGESTQ_REDIS_URL (embedded jobs run in this process)"
        )
    job = enqueue_ingest(
        source, digest=digest, size=size, media_type=media_type, ref=ref,
        labels=parse_labels(labels), expire=expire, job_id=job_id, idempotency_key=idempotency_key,
        client=client,
    )  # fmt: skip
    if not wait:
        if as_json:
            echo_json({"job": job.id, "ref": job.ref, "state": job.state.value})
        else:
            click.echo(job.id)
        return
    _wait(job, timeout, as_json, client.in_process)


@click.group("job")
def job_group() -> None:
    """Inspect, wait for or cancel a job by id."""


@job_group.command("status")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@root_option
@handle_errors
def job_status(job_id: str, as_json: bool, root: Path | None) -> None:
    """Print a job's state, reason and progress (NotFound for an unknown job)."""
    from ingestq.jobs.api import JobState

    job = _client(root).job(job_id)
    state = job.state
    if state is JobState.UNKNOWN:
        raise errdefs.NotFound(f"job {job_id}")
    progress = job.progress
    out: dict[str, Any] = {
        "job": job.id,
        "state": state.value,
        "ref": job.ref,
        "reason": job.reason,
        "offset": progress.offset if progress else None,
        "total": progress.total if progress else None,
    }
    if as_json:
        echo_json(out)
        return
    click.echo(f"{job.id}  {state.value}  {job.ref}")
    if progress is not None:
        click.echo("  " + line("progress", progress.offset, progress.total, 0.0, False))
    if out["reason"]:
        click.echo(f"  reason: {out['reason']}")


@job_group.command("wait")
@click.argument("job_id")
@click.option("--timeout", type=float, default=None, help="Give up after N seconds.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@root_option
@handle_errors
def job_wait(job_id: str, timeout: float | None, as_json: bool, root: Path | None) -> None:
    """Wait for a job; print the digest, or exit with its error kind's code."""
    client = _client(root)
    _wait(client.job(job_id), timeout, as_json, client.in_process)


@job_group.command("cancel")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@root_option
@handle_errors
def job_cancel(job_id: str, as_json: bool, root: Path | None) -> None:
    """Cancel a job: dropped if queued, stopped at the next chunk if running."""
    _client(root).job(job_id).cancel()
    if as_json:
        echo_json({"job": job_id, "cancel": "requested"})
    else:
        click.echo(f"cancel requested: {job_id}")


@click.command("active")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", is_flag=True, help="Redraw every second until interrupted.")
@root_option
@handle_errors
def active_cmd(as_json: bool, watch: bool, root: Path | None) -> None:
    """List every live ingest (across all workers with Redis; in this host's store
    without)."""
    client = _client(root)
    tty = sys.stdout.isatty() and not as_json
    while True:
        items = client.active()
        if as_json:
            echo_json([a.to_json() for a in items])
        else:
            if tty and watch:
                click.echo("\x1b[2J\x1b[H", nl=False)
            for a in items:
                who = f"{a.host}/{a.pid}" if a.host else "-"
                click.echo(line(f"{a.ref[:48]:48} {who:>16}", a.offset, a.total, a.rate, tty))
        if not watch:
            return
        time.sleep(1.0)


@click.command(
    "worker", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None)
@click.option(
    "--pool", type=click.Choice(["prefork", "solo", "threads"]), default="prefork",
    show_default=True,
)  # fmt: skip
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("-n", "--hostname", default=None, help="Worker node name (name@host).")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics here.")
@click.option("--json-logs", is_flag=True, help="Log one JSON object per line.")
@root_option
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def worker_cmd(
    concurrency: int | None,
    pool: str,
    loglevel: str,
    hostname: str | None,
    metrics_port: int | None,
    json_logs: bool,
    root: Path | None,
    celery_args: tuple[str, ...],
) -> None:
    """Run a Celery worker of the project's app (same as ``celery -A ingestq.tasks.app
    worker``). Other options are Celery's and passed to it (e.g. -E for task events,
    --max-tasks-per-child N, --without-gossip)."""
    import os

    if root is not None:
        os.environ["INGESTQ_ROOT"] = str(root)
    if not _settings(root).queued:
        raise errdefs.FailedPrecondition(
            "a worker needs Redis: set INGESTQ_REDIS_URL (or INGESTQ_BROKER_URL)"
        )
    from ingestq.worker.celery_worker import run_worker

    run_worker(
        concurrency=concurrency, pool=pool, loglevel=loglevel, hostname=hostname,
        metrics_port=metrics_port, extra=celery_args, json_logs=json_logs,
    )  # fmt: skip


def register(cli: click.Group) -> None:
    """Add this module's commands to the main group."""
    for command in (ingest_cmd, job_group, active_cmd, worker_cmd):
        cli.add_command(command)
