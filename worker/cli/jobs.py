"""``ingestq`` commands for jobs: ``ingest``, ``job status|wait|cancel``, ``active`` and
``worker``.

Without Redis configured (no ``INGESTQ_REDIS_URL``/``INGESTQ_BROKER_URL``) ``ingest``
runs the job in this process (the embedded default) and ``active`` lists the store's
ingests; with Redis, ``ingest`` enqueues for the workers and waits unless ``--detach``.
Errors exit with 10 + the gRPC code of their kind (see ``ingestq --help``).

Every command that starts a job prints its id on stderr (``-q`` silences it); while
waiting, a TTY shows one status line (source, bytes, total, rate, ETA), the retries
of an unavailable source (reason, attempt of maximum, time until the next try) and a
queue no worker consumes; ``--json`` turns these into JSON events on stderr. Ctrl-C
cancels the job the command started and exits 130.

Without ``--digest`` the bytes are hashed while they are fetched and committed under
the digest they turn out to have; the ref is then ``source-<sha256 of the source>``, so
a re-run of the same URL resumes the same ingest.
"""

from __future__ import annotations

import contextlib
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ingestq import errdefs
from ingestq.worker.cli.common import (
    EXIT_INTERRUPTED,
    echo_json,
    events_json_option,
    handle_errors,
    job_client,
    max_bytes_option,
    parse_labels,
    quiet_option,
    retries_option,
    root_option,
    submit_options,
    verbose_option,
)
from ingestq.worker.cli.progress import Display, Meter, eta, human_seconds, line, mode_for, shorten

if TYPE_CHECKING:
    from ingestq.jobs.api import IngestJob, JobClient, RetryInfo
    from ingestq.store.values import Info
    from ingestq.tasks.queue import QueueClient

#: Seconds between two redraws while waiting.
REFRESH = 0.25
#: Seconds a job may stay queued before the CLI asks whether any worker consumes it.
NO_WORKER_AFTER = 3.0
#: Seconds between two such questions.
CONSUMER_CHECK_EVERY = 5.0
#: Seconds between two JSON progress events.
EVENT_EVERY = 1.0
#: How long an interrupted embedded job gets to stop and keep its data, seconds.
STOP_GRACE = 30.0


def _client(root: Path | None, write: bool = False, max_bytes: str | None = None) -> JobClient:
    return job_client(root, write=write, max_bytes=max_bytes)


def _info_json(info: Info, job: IngestJob) -> dict[str, Any]:
    from ingestq.store.codec import info_to_json

    return {"job_id": job.id, "ref": job.ref, **info_to_json(info)}


def announce(job_id: str, kind: str, display: Display) -> None:
    """Tell the user (stderr) which job was started, unless quiet."""
    if display.mode == "json":
        display.event("started", job_id=job_id, job_kind=kind)
    elif display.mode != "quiet":
        display.message(f"ingestq: {kind} job {job_id} (Ctrl-C cancels it)")


def retry_text(retry: RetryInfo, countdown: bool) -> str:
    """``retrying: attempt 2/9 failed: <reason>; next try in 4s`` (``at HH:MM:SS``
    without ``countdown``)."""
    most = str(retry.max_attempts) if retry.max_attempts else "unbounded"
    text = f"retrying: attempt {retry.attempt}/{most} failed: {retry.reason}"
    if retry.next_at is not None:
        if countdown:
            text += f"; next try in {human_seconds(max(retry.next_at - time.time(), 0.0))}"
        else:
            at = datetime.fromtimestamp(retry.next_at).strftime("%H:%M:%S")
            text += f"; next try at {at}"
    return text


class QueueWatch:
    """Whether any worker consumes the queue of a job that stays queued (asked at most
    every :data:`CONSUMER_CHECK_EVERY` seconds, after :data:`NO_WORKER_AFTER`)."""

    def __init__(self, client: JobClient) -> None:
        self.queue = ""
        self._client: QueueClient | None = None
        if not client.in_process:  # only the queue loads Celery
            from ingestq.tasks.app import QUEUE
            from ingestq.tasks.queue import QueueClient

            self.queue = QUEUE
            self._client = client if isinstance(client, QueueClient) else None
        self._since: float | None = None
        self._next = 0.0
        self.idle = False

    def check(self, queued: bool) -> bool:
        """True when the job is queued and no worker consumes its queue."""
        if self._client is None or not queued:
            self._since = None
            self.idle = False
            return False
        now = time.monotonic()
        if self._since is None:
            self._since = now
        if now - self._since >= NO_WORKER_AFTER and now >= self._next:
            self._next = now + CONSUMER_CHECK_EVERY
            try:
                consumers = self._client.consumers(timeout=1.0)
            except errdefs.Unavailable:
                return self.idle
            self.idle = not any(self.queue in queues for queues in consumers.values())
        return self.idle


def follow(job: IngestJob, client: JobClient, timeout: float | None, display: Display) -> Info:
    """Wait for ``job`` (at most ``timeout`` seconds), showing its progress, retries and
    an idle queue on ``display``; its Info, or its error."""
    from ingestq.jobs.api import JobState

    if display.mode == "quiet":
        # Nothing to show meanwhile: one wait, woken by the job's end (a queued job's
        # result channel) instead of a poll every REFRESH.
        return job.wait(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    meter = Meter()
    watch = QueueWatch(client)
    label = shorten(job.source or job.ref, 60)
    last_event = 0.0
    last_attempt = 0
    told_idle = False
    while True:
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            return job.wait(REFRESH if remaining is None else min(REFRESH, remaining))
        except errdefs.DeadlineExceeded:
            if remaining is not None and remaining <= REFRESH:
                raise
        state = job.state
        idle = watch.check(state is JobState.QUEUED)
        if idle and not told_idle:
            display.event("queued", job_id=job.id, queue=watch.queue, workers=0)
        told_idle = idle
        if idle:
            display.status(f"queued: no worker is consuming {watch.queue}")
            display.message(f"ingestq: queued: no worker is consuming {watch.queue}")
            continue
        if state is JobState.RETRYING:
            retry = job.retry
            if retry is None:
                text = f"waiting: {job.reason or 'retrying'}"
                display.status(text)
                continue
            display.status(retry_text(retry, countdown=True))
            if retry.attempt != last_attempt:
                last_attempt = retry.attempt
                display.message("ingestq: " + retry_text(retry, countdown=False))
                display.event("retrying", job_id=job.id, **retry.to_json())
            continue
        progress = job.progress
        if progress is None:
            display.status(f"{label}  {state.value}")
            continue
        rate = meter.sample(progress.offset)
        display.status(line(label, progress.offset, progress.total, rate, True))
        now = time.monotonic()
        if now - last_event >= EVENT_EVERY:
            last_event = now
            display.event(
                "progress",
                job_id=job.id,
                source=job.source,
                offset=progress.offset,
                total=progress.total,
                rate=round(rate, 1),
                eta=eta(progress.offset, progress.total, rate),
            )


def interrupted(job: Any, in_process: bool, display: Display, started_here: bool) -> NoReturn:
    """Ctrl-C while waiting: cancel the job this command started (an embedded one gets
    :data:`STOP_GRACE` seconds to stop and keep its partial data), say so, exit 130."""
    display.finish()
    if not started_here:
        text = f"ingestq: interrupted: job {job.id} goes on (ingestq job cancel {job.id} stops it)"
    else:
        try:
            job.cancel()
            if in_process:
                with contextlib.suppress(errdefs.ErrdefsError):
                    job.wait(STOP_GRACE)
            text = f"ingestq: interrupted: job {job.id} canceled"
            if in_process:
                text += " (its partial data is kept: run the same command again to resume)"
        except errdefs.ErrdefsError as e:
            text = f"ingestq: interrupted: could not cancel job {job.id}: {e}"
    if display.mode == "json":
        display.event("interrupted", job_id=job.id, canceled=started_here)
    click.echo(text, err=True)
    sys.exit(EXIT_INTERRUPTED)


def wait_and_print(
    job: IngestJob,
    client: JobClient,
    timeout: float | None,
    as_json: bool,
    display: Display,
    started_here: bool,
) -> None:
    """Follow ``job`` and print its digest (or its Info as JSON); Ctrl-C is
    :func:`interrupted`."""
    try:
        try:
            info = follow(job, client, timeout, display)
        finally:
            display.finish()
    except KeyboardInterrupt:
        interrupted(job, client.in_process, display, started_here)
    if as_json:
        echo_json(_info_json(info, job))
    else:
        click.echo(str(info.digest))


@click.command("ingest")
@click.argument("source")
@click.option("--digest", default=None, help="Expected digest (alg:hex); computed if omitted.")
@click.option(
    "--size", type=click.IntRange(min=0), default=0, help="Expected size in bytes (0: unknown)."
)
@click.option("--ref", default=None, help="Ingest ref (default: containerd's ref key).")
@click.option(
    "--media-type",
    default="application/octet-stream",
    show_default=True,
    help="Media type recorded with the blob.",
)
@click.option("--label", "labels", multiple=True, help="k=v label for the blob (repeatable).")
@click.option(
    "--expire",
    default=None,
    metavar="DURATION",
    help="Let gc remove the blob after DURATION (30s, 10m, 7d) unless something else uses it.",
)
@click.option(
    "--wait/--detach",
    default=True,
    help="Wait for the job (default) or print its id and return (queue only).",
)
@click.option("--timeout", type=float, default=None, help="Give up waiting after N seconds.")
@retries_option
@submit_options
@events_json_option
@quiet_option
@verbose_option
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
    retries: int | None,
    job_id: str | None,
    idempotency_key: str | None,
    as_json: bool,
    quiet: bool,
    root: Path | None,
    max_bytes: str | None,
) -> None:
    """Ingest SOURCE (an http(s) URL or a file path) into the store.

    Prints the job id on stderr when it starts, progress while it runs, then the blob's
    digest (with --detach: the job id). gc keeps the blob (until --expire's time, when
    given). An ingest that does not fit in the disk budget fails with ResourceExhausted
    (exit 18): before fetching when its size is known, at the limit (kept for a resume)
    otherwise. Ctrl-C cancels the job (an embedded job keeps its partial data for a
    resume) and exits 130."""
    from ingestq.tasks.client import enqueue_ingest

    client = _client(root, write=True, max_bytes=max_bytes)
    if not wait and client.in_process:
        raise errdefs.InvalidArgument(
            "--detach needs a queue: set INGESTQ_REDIS_URL (embedded jobs run in this process)"
        )
    job = enqueue_ingest(
        source,
        digest=digest,
        size=size,
        media_type=media_type,
        ref=ref,
        labels=parse_labels(labels),
        expire=expire,
        job_id=job_id,
        idempotency_key=idempotency_key,
        client=client,
        retries=retries,
    )
    if not wait:
        if as_json:
            echo_json({"job_id": job.id, "ref": job.ref, "state": job.state.value})
        else:
            click.echo(job.id)
        return
    display = Display(mode_for(quiet, as_json))
    announce(job.id, "ingest", display)
    wait_and_print(job, client, timeout, as_json, display, started_here=True)


@click.group("job")
def job_group() -> None:
    """List, inspect, wait for or cancel jobs."""


@job_group.command("ls")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(
        ["queued", "started", "retrying", "succeeded", "failed", "canceled", "unknown"]
    ),
    help="Only jobs in this state (repeatable).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="List at most N jobs, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@quiet_option
@verbose_option
@root_option
@handle_errors
def job_ls(
    states: tuple[str, ...], limit: int, as_json: bool, quiet: bool, root: Path | None
) -> None:
    """List recorded jobs, newest first: ID, KIND, STATE, CREATED, SOURCE (-q: ids only)."""
    items = _client(root).jobs(limit if not states else max(limit, 1000))
    if states:
        items = [j for j in items if j.state.value in states][:limit]
    if as_json:
        echo_json([j.to_json() for j in items])
        return
    if quiet:
        for j in items:
            click.echo(j.job_id)
        return
    rows = [("JOB ID", "KIND", "STATE", "CREATED", "SOURCE")]
    for j in items:
        created = datetime.fromtimestamp(j.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((j.job_id, j.kind, j.state.value, created, j.source))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        click.echo("  ".join([*(f"{c:<{w}}" for c, w in zip(r, widths, strict=False)), r[4]]))


def _pull_status_json(job_id: str, client: JobClient) -> dict[str, Any] | None:
    """A pull job's status (aggregated over its children), or None for an ingest job."""
    from ingestq.jobs.api import JobState

    kinds = {j.job_id: j.kind for j in client.jobs()}
    if kinds.get(job_id) != "pull":
        return None
    status = client.pull(job_id).status()
    if status.state is JobState.UNKNOWN:
        return None
    total = sum(b.size for b in status.blobs)
    return {
        "job_id": job_id,
        "kind": "pull",
        "state": status.state.value,
        "source": status.reference,
        "name": status.name,
        "reason": status.reason,
        "offset": status.bytes_done,
        "total": total,
        "blobs": [
            {
                "ref": b.ref,
                "digest": str(b.digest),
                "media_type": b.media_type,
                "state": b.state.value,
                "offset": b.offset,
                "total": b.size,
                "reason": b.reason,
            }
            for b in status.blobs
        ],
    }


@job_group.command("status")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@verbose_option
@root_option
@handle_errors
def job_status(job_id: str, as_json: bool, root: Path | None) -> None:
    """Print a job's state, reason, retries and progress (a pull's: summed over its
    blobs, one line each). NotFound for an unknown job."""
    from ingestq.jobs.api import JobState

    client = _client(root)
    pulled = _pull_status_json(job_id, client)
    if pulled is not None:
        if as_json:
            echo_json(pulled)
            return
        click.echo(f"{job_id}  {pulled['state']}  {pulled['source']}")
        click.echo("  " + line("progress", pulled["offset"], pulled["total"], 0.0, False))
        for b in pulled["blobs"]:
            click.echo(
                f"  {b['ref']}  {b['state']}  " + line("", b["offset"], b["total"], 0.0, False)
            )
        if pulled["reason"]:
            click.echo(f"  reason: {pulled['reason']}")
        return
    job = client.job(job_id)
    state = job.state
    if state is JobState.UNKNOWN:
        raise errdefs.NotFound(f"job {job_id}")
    progress = job.progress
    retry = job.retry
    out: dict[str, Any] = {
        "job_id": job.id,
        "kind": "ingest",
        "state": state.value,
        "ref": job.ref,
        "source": job.source,
        "reason": job.reason,
        "offset": progress.offset if progress else None,
        "total": progress.total if progress else None,
        "retry": retry.to_json() if retry else None,
    }
    if as_json:
        echo_json(out)
        return
    click.echo(f"{job.id}  {state.value}  {job.source or job.ref}")
    if progress is not None:
        click.echo("  " + line("progress", progress.offset, progress.total, 0.0, False))
    if retry is not None:
        click.echo("  " + retry_text(retry, countdown=True))
    elif out["reason"]:
        click.echo(f"  reason: {out['reason']}")


@job_group.command("wait")
@click.argument("job_id")
@click.option("--timeout", type=float, default=None, help="Give up after N seconds.")
@events_json_option
@quiet_option
@verbose_option
@root_option
@handle_errors
def job_wait(
    job_id: str, timeout: float | None, as_json: bool, quiet: bool, root: Path | None
) -> None:
    """Wait for a job; print the digest, or exit with its error kind's code. Ctrl-C stops
    waiting (exit 130) and leaves the job running."""
    client = _client(root)
    display = Display(mode_for(quiet, as_json))
    wait_and_print(client.job(job_id), client, timeout, as_json, display, started_here=False)


@job_group.command("cancel")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@verbose_option
@root_option
@handle_errors
def job_cancel(job_id: str, as_json: bool, root: Path | None) -> None:
    """Cancel a job: dropped if queued, stopped at the next chunk if running."""
    _client(root).job(job_id).cancel()
    if as_json:
        echo_json({"job_id": job_id, "cancel": "requested"})
    else:
        click.echo(f"cancel requested: {job_id}")


@click.command("active")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--watch", is_flag=True, help="Redraw every second until interrupted.")
@verbose_option
@root_option
@handle_errors
def active_cmd(as_json: bool, watch: bool, root: Path | None) -> None:
    """List every live ingest (across all workers with Redis; in this host's store
    without): source (or ref), holder, bytes, rate and ETA."""
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
                name = shorten(a.source or a.ref, 48)
                click.echo(line(f"{name:48} {who:>16}", a.offset, a.total, a.rate, tty))
        if not watch:
            return
        time.sleep(1.0)


@click.command(
    "worker", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Jobs run at once (default: the number of CPUs).",
)
@click.option(
    "--pool",
    type=click.Choice(["prefork", "solo", "threads"]),
    default="prefork",
    show_default=True,
    help="Celery execution pool.",
)
@click.option(
    "--log-level",
    "--loglevel",
    "loglevel",
    default="INFO",
    show_default=True,
    help="DEBUG, INFO, WARNING, ERROR or CRITICAL.",
)
@click.option("-n", "--hostname", default=None, help="Worker node name (name@host).")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics here.")
@click.option("--json-logs", is_flag=True, help="Log one JSON object per line.")
@verbose_option
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
    """Run a Celery worker of the project's app (the same as "celery -A
    ingestq.tasks.app worker"). Other options are Celery's and passed to it (e.g. -E for
    task events, --max-tasks-per-child N, --without-gossip)."""
    import os

    if root is not None:
        os.environ["INGESTQ_ROOT"] = str(root)
    from ingestq.worker.celery_worker import run_worker

    run_worker(
        concurrency=concurrency, pool=pool, loglevel=loglevel, hostname=hostname,
        metrics_port=metrics_port, extra=celery_args, json_logs=json_logs,
    )  # fmt: skip


def register(cli: click.Group) -> None:
    """Add this module's commands to the main group."""
    for command in (ingest_cmd, job_group, active_cmd, worker_cmd):
        cli.add_command(command)
