"""``ingestq pull``.

``ingestq pull REF`` pulls an image (``HOST[:PORT]/REPO[:TAG|@DIGEST]``, a docker short
name, or ``oci-layout:DIR[:NAME]``) into the store and records it in the store's OCI
``index.json``. Without Redis configured the pull runs in this process (children in a
thread pool); with Redis it is queued for the workers, and ``--detach`` returns its job
id at once. While waiting, a TTY shows one line per blob like ``ctr``'s::

    index-sha256:4b1e…:    done          |++++++++++++++++++++|  645.0 B/645.0 B
    layer-sha256:9a0c…:    downloading   |+++++++-------------|  22.0 MiB/64.0 MiB
    elapsed: 1.4 s         total: 150.2 MiB (107.3 MiB/s)

and other outputs get the final table once. ``--blob`` ingests a single registry blob
(``HOST/REPO@DIGEST``) instead of an image (``ingestq images``, in
:mod:`ingestq.worker.cli.images`, lists what ``index.json`` holds). Errors exit with
10 + the gRPC code of their kind (see ``ingestq --help``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ingestq import errdefs
from ingestq.worker.cli.common import (
    echo_json,
    events_json_option,
    handle_errors,
    hidden_alias,
    job_client,
    max_bytes_option,
    quiet_option,
    retries_option,
    root_option,
    submit_options,
    verbose_option,
)
from ingestq.worker.cli.progress import Display, Meter, eta, human_bytes, human_seconds, mode_for

if TYPE_CHECKING:
    from ingestq.jobs.api import JobClient, PullJob
    from ingestq.jobs.pullstatus import PullStatus

#: Seconds between progress redraws on a TTY.
REFRESH = 0.1
BAR_WIDTH = 40


def _client(root: Path | None, max_bytes: str | None = None) -> JobClient:
    return job_client(root, write=True, max_bytes=max_bytes)


def _bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    if total <= 0:
        return "|" + "-" * width + "|"
    filled = min(width, int(width * done / total))
    return "|" + "+" * filled + "-" * (width - filled) + "|"


def render(status: PullStatus, elapsed: float, rate: float | None = None) -> list[str]:
    """The progress table of ``status``: one line per blob, then the totals (with the
    rate, ``rate`` when given, else the average, and the time left)."""
    from ingestq.images.status import BlobState

    rows: list[tuple[str, str, str, str]] = []
    if not status.blobs:
        label = status.name or status.reference
        waiting = "retrying" if status.reason else "resolving"
        rows.append((f"{label}:", waiting, _bar(0, 0), status.reason or ""))
    for b in status.blobs:
        done = b.size if b.state is BlobState.DONE else b.offset
        rows.append(
            (
                f"{b.ref}:",
                b.state.value,
                _bar(done, b.size),
                f"{human_bytes(done)}/{human_bytes(b.size)}",
            )
        )
        if b.reason:
            rows.append(("", "", "", f"  {b.reason}"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{r[0]:<{width}}  {r[1]:<12} {r[2]}  {r[3]}".rstrip() for r in rows]
    if rate is None:
        rate = status.bytes_done / elapsed if elapsed > 0 else 0.0
    left = eta(status.bytes_done, status.bytes_total, rate)
    lines.append(
        f"{'elapsed: ' + format(elapsed, '.1f') + ' s':<{width}}  "
        f"total: {human_bytes(status.bytes_done)}/{human_bytes(status.bytes_total)} "
        f"({human_bytes(rate)}/s" + (f", ETA {human_seconds(left)})" if left is not None else ")")
    )
    return lines


def _follow(job: PullJob, timeout: float | None, display: Display) -> None:
    """Wait for ``job``; redraw the table on a TTY, print it once at the end otherwise
    (JSON events in json mode). Ctrl-C cancels the pull and exits 130."""
    from ingestq.worker.cli.jobs import interrupted

    try:
        _follow_table(job, timeout, display)
    except KeyboardInterrupt:
        interrupted(job, False, display, started_here=True)


def _follow_table(job: PullJob, timeout: float | None, display: Display) -> None:
    tty = display.mode == "tty"
    quiet = display.mode in ("quiet", "json")
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    drawn = 0
    meter = Meter()
    last_event = 0.0
    if not tty and display.mode != "json":
        # Nothing to redraw meanwhile: one wait, woken by the job's end (a queued job's
        # result channel) instead of a poll every REFRESH.
        try:
            job.wait(timeout)
        except errdefs.DeadlineExceeded:
            raise errdefs.DeadlineExceeded(f"pull {job.id} not done after {timeout}s") from None
        except errdefs.ErrdefsError:
            pass  # the final table below, then the error from the last wait
    while tty or display.mode == "json":
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise errdefs.DeadlineExceeded(f"pull {job.id} not done after {timeout}s")
        try:
            job.wait(REFRESH if remaining is None else min(REFRESH, remaining))
            break
        except errdefs.DeadlineExceeded:
            pass
        except errdefs.ErrdefsError:
            break  # the final table below, then the error from the last wait
        if display.mode == "json" and time.monotonic() - last_event >= 1.0:
            last_event = time.monotonic()
            st = job.status()
            rate = meter.sample(st.bytes_done)
            display.event(
                "progress",
                job_id=job.id,
                source=st.reference,
                state=st.state.value,
                offset=st.bytes_done,
                total=st.bytes_total,
                rate=round(rate, 1),
                eta=eta(st.bytes_done, st.bytes_total, rate),
                reason=st.reason,
            )
        if tty:
            st = job.status()
            lines = render(st, time.monotonic() - started, meter.sample(st.bytes_done))
            if drawn:
                click.echo(f"\x1b[{drawn}A", nl=False, err=True)
            for text in lines:
                click.echo("\x1b[2K" + text, err=True)
            drawn = len(lines)
    if not quiet:
        lines = render(job.status(), time.monotonic() - started)
        if tty and drawn:
            click.echo(f"\x1b[{drawn}A", nl=False, err=True)
        for text in lines:
            click.echo(("\x1b[2K" if tty else "") + text, err=True)


def _pull_json(job_id: str, result: Any) -> dict[str, Any]:
    out = {"job_id": job_id}
    out.update(result.to_json())
    return out


@click.command("pull")
@click.argument("reference")
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    help="os/arch[/variant] to pull (repeatable; default: this host's).",
)
@click.option("--all-platforms", is_flag=True, help="Pull every platform of an index.")
@click.option("--plain-http", is_flag=True, default=None, help="Use http:// for the registry.")
@click.option(
    "-k",
    "--skip-verify",
    "--insecure-skip-verify",
    "skip_verify",
    is_flag=True,
    help="Do not verify the registry's TLS certificate.",
)
@click.option(
    "--tls-ca-cert",
    "ca_bundle",
    type=click.Path(dir_okay=False),
    default=None,
    help="PEM CA bundle to trust for the registry.",
)
@click.option(
    "--tls-cert",
    "client_cert",
    type=click.Path(dir_okay=False),
    default=None,
    help="PEM client certificate for the registry.",
)
@click.option(
    "--tls-key",
    "client_key",
    type=click.Path(dir_okay=False),
    default=None,
    help="PEM key of --tls-cert.",
)
@hidden_alias("--tlscacert", "old_ca_bundle", "--tls-ca-cert")
@hidden_alias("--tlscert", "old_client_cert", "--tls-cert")
@hidden_alias("--tlskey", "old_client_key", "--tls-key")
@click.option(
    "--auth-file",
    "auth_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="docker config.json with credentials (default: the usual places).",
)
@click.option("--name", default=None, help="Record the image under NAME.")
@click.option("--blob", is_flag=True, help="REFERENCE is HOST/REPO@DIGEST: ingest one blob.")
@click.option("--wait/--detach", default=True, help="Wait for the pull (default) or return.")
@click.option("--timeout", type=float, default=None, help="Give up waiting after N seconds.")
@retries_option
@submit_options
@events_json_option
@quiet_option
@verbose_option
@root_option
@max_bytes_option
@handle_errors
def pull_cmd(
    reference: str,
    platforms: tuple[str, ...],
    all_platforms: bool,
    plain_http: bool | None,
    skip_verify: bool,
    ca_bundle: str | None,
    client_cert: str | None,
    client_key: str | None,
    old_ca_bundle: str | None,
    old_client_cert: str | None,
    old_client_key: str | None,
    auth_files: tuple[str, ...],
    name: str | None,
    blob: bool,
    wait: bool,
    timeout: float | None,
    retries: int | None,
    job_id: str | None,
    idempotency_key: str | None,
    quiet: bool,
    as_json: bool,
    root: Path | None,
    max_bytes: str | None,
) -> None:
    """Pull image REFERENCE into the store and record it under its full name.

    Prints the job id on stderr when it starts, a progress table while it runs, then the
    recorded name and the image digest (with --detach: the job id). Ctrl-C cancels the
    pull (its blobs' partial data is kept) and exits 130."""
    from ingestq.fetch.registry.options import RegistryOptions
    from ingestq.images.request import PullRequest
    from ingestq.tasks.client import enqueue_pull

    options = RegistryOptions(
        plain_http=True if plain_http else None,
        insecure_skip_verify=skip_verify,
        ca_bundle=ca_bundle or old_ca_bundle,
        client_cert=client_cert or old_client_cert,
        client_key=client_key or old_client_key,
        auth_files=auth_files or None,
    )
    client = _client(root, max_bytes)
    if not wait and client.in_process:
        raise errdefs.InvalidArgument(
            "--detach needs a queue: set INGESTQ_REDIS_URL (embedded pulls run in this process)"
        )
    display = Display(mode_for(quiet, as_json))
    if blob:
        _pull_blob(reference, options, client, wait, timeout, job_id, idempotency_key,
                   retries, as_json, display)  # fmt: skip
        return
    request = PullRequest(reference, platforms, all_platforms, options, name)
    job = enqueue_pull(
        request, job_id=job_id, idempotency_key=idempotency_key, retries=retries, client=client
    )
    if not wait:
        if as_json:
            echo_json({"job_id": job.id, "state": job.state.value})
        else:
            click.echo(job.id)
        return
    from ingestq.worker.cli.jobs import announce

    announce(job.id, "pull", display)
    _follow(job, timeout, display)
    result = job.wait(0)
    if as_json:
        echo_json(_pull_json(job.id, result))
    else:
        click.echo(f"{result.name} {result.target.digest}")


def _pull_blob(
    reference: str,
    options: Any,
    client: JobClient,
    wait: bool,
    timeout: float | None,
    job_id: str | None,
    idempotency_key: str | None,
    retries: int | None,
    as_json: bool,
    display: Display,
) -> None:
    from ingestq.fetch.reference import parse_blob_reference
    from ingestq.fetch.registry.client import RegistryClient, blob_spec
    from ingestq.store.values import Descriptor
    from ingestq.tasks.client import enqueue_ingest

    ref = parse_blob_reference(reference)
    assert ref.digest is not None
    with RegistryClient(options) as registry:
        size = registry.blob_size(ref, Descriptor(ref.digest))
    desc = Descriptor(ref.digest, size)
    spec = blob_spec(ref, desc, options)
    job = enqueue_ingest(
        spec,
        digest=str(ref.digest),
        size=size,
        media_type=desc.media_type,
        job_id=job_id,
        idempotency_key=idempotency_key,
        retries=retries,
        client=client,
    )
    if not wait:
        click.echo(json.dumps({"job_id": job.id}) if as_json else job.id)
        return
    from ingestq.worker.cli.jobs import announce, wait_and_print

    announce(job.id, "ingest", display)
    wait_and_print(job, client, timeout, as_json, display, started_here=True)


def register(cli: click.Group) -> None:
    """Add this module's commands to the main group."""
    cli.add_command(pull_cmd)
