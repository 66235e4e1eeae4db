"""``ingestq pull`` and ``ingestq images``.

``ingestq pull REF`` pulls an image (``HOST[:PORT]/REPO[:TAG|@DIGEST]``, a docker short
name, or ``oci-layout:DIR[:NAME]``) into the store and records it in the store's OCI
``index.json``. Without Redis configured the pull runs in this process (children in a
thread pool); with Redis it is queued for the workers, and ``--detach`` returns its job
id at once. While waiting, a TTY shows one line per blob like ``ctr``'s::

    index-sha256:4b1e…:    done          |++++++++++++++++++++|  645.0 B/645.0 B
    layer-sha256:9a0c…:    downloading   |+++++++-------------|  22.0 MiB/64.0 MiB
    elapsed: 1.4 s         total: 150.2 MiB (107.3 MiB/s)

and other outputs get the final table once. ``--blob`` ingests a single registry blob
(``HOST/REPO@DIGEST``) instead of an image. ``ingestq images`` lists what ``index.json``
holds. Errors exit with 10 + the gRPC code of their kind (see ``ingestq --help``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ingestq import errdefs
from ingestq.worker.cli.common import echo_json, handle_errors, root_option
from ingestq.worker.cli.progress import human_bytes

if TYPE_CHECKING:
    from ingestq.jobs.api import JobClient, PullJob
    from ingestq.jobs.config import Settings
    from ingestq.jobs.pullstatus import PullStatus

#: Seconds between progress redraws on a TTY.
REFRESH = 0.1
BAR_WIDTH = 40


def _settings(root: Path | None) -> Settings:
    from ingestq.jobs.config import Settings

    settings = Settings.from_env()
    return dataclasses.replace(settings, root=root) if root is not None else settings


def _client(root: Path | None) -> JobClient:
    from ingestq.tasks.client import connect

    return connect(_settings(root))


def _bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    if total <= 0:
        return "|" + "-" * width + "|"
    filled = min(width, int(width * done / total))
    return "|" + "+" * filled + "-" * (width - filled) + "|"


def render(status: PullStatus, elapsed: float) -> list[str]:
    """The progress table of ``status``: one line per blob, then the totals."""
    from ingestq.images.status import BlobState

    rows: list[tuple[str, str, str, str]] = []
    if not status.blobs:
        label = status.name or status.reference
        rows.append((f"{label}:", "resolving", _bar(0, 0), ""))
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
    width = max(len(r[0]) for r in rows)
    lines = [f"{r[0]:<{width}}  {r[1]:<12} {r[2]}  {r[3]}".rstrip() for r in rows]
    rate = status.bytes_done / elapsed if elapsed > 0 else 0.0
    lines.append(
        f"{'elapsed: ' + format(elapsed, '.1f') + ' s':<{width}}  "
        f"total: {human_bytes(status.bytes_done)} ({human_bytes(rate)}/s)"
    )
    return lines


def _follow(job: PullJob, timeout: float | None, tty: bool, quiet: bool) -> None:
    """Wait for ``job``; redraw the table on a TTY, print it once at the end otherwise."""
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    drawn = 0
    while True:
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
        if tty and not quiet:
            lines = render(job.status(), time.monotonic() - started)
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
    out = {"job": job_id}
    out.update(result.to_json())
    return out


@click.command("pull")
@click.argument("reference")
@click.option(
    "--platform", "platforms", multiple=True,
    help="os/arch[/variant] to pull (repeatable; default: this host's).",
)  # fmt: skip
@click.option("--all-platforms", is_flag=True, help="Pull every platform of an index.")
@click.option("--plain-http", is_flag=True, default=None, help="Use http:// for the registry.")
@click.option(
    "-k", "--skip-verify", "--insecure-skip-verify", "skip_verify", is_flag=True,
    help="Do not verify the registry's TLS certificate.",
)  # fmt: skip
@click.option("--tlscacert", "ca_bundle", type=click.Path(dir_okay=False), default=None,
              help="PEM CA bundle to trust for the registry.")  # fmt: skip
@click.option("--tlscert", "client_cert", type=click.Path(dir_okay=False), default=None,
              help="PEM client certificate for the registry.")  # fmt: skip
@click.option("--tlskey", "client_key", type=click.Path(dir_okay=False), default=None,
              help="PEM key of --tlscert.")  # fmt: skip
@click.option("--auth-file", "auth_files", multiple=True, type=click.Path(dir_okay=False),
              help="docker config.json with credentials (default: the usual places).")  # fmt: skip
@click.option("--name", default=None, help="Record the image under NAME.")
@click.option("--blob", is_flag=True, help="REFERENCE is HOST/REPO@DIGEST: ingest one blob.")
@click.option("--wait/--detach", default=True, help="Wait for the pull (default) or return.")
@click.option("--timeout", type=float, default=None, help="Give up waiting after N seconds.")
@click.option("--job-id", default=None, help="Choose the job id.")
@click.option("--idempotency-key", default=None, help="Enqueue at most once per key.")
@click.option("-q", "--quiet", is_flag=True, help="No progress table.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@root_option
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
    auth_files: tuple[str, ...],
    name: str | None,
    blob: bool,
    wait: bool,
    timeout: float | None,
    job_id: str | None,
    idempotency_key: str | None,
    quiet: bool,
    as_json: bool,
    root: Path | None,
) -> None:
    """Pull image REFERENCE into the store and record it under its full name.

    Prints the recorded name and the image digest (or, with --detach, the job id)."""
    from ingestq.fetch.registry.client import RegistryOptions
    from ingestq.images.request import PullRequest
    from ingestq.tasks.client import enqueue_pull

    options = RegistryOptions(
        plain_http=True if plain_http else None,
        insecure_skip_verify=skip_verify,
        ca_bundle=ca_bundle,
        client_cert=client_cert,
        client_key=client_key,
        auth_files=auth_files or None,
    )
    client = _client(root)
    if not wait and client.in_process:
        raise errdefs.InvalidArgument(
            "--detach needs a queue: set INGESTQ_REDIS_URL (embedded pulls run in this process)"
        )
    if blob:
        _pull_blob(reference, options, client, wait, timeout, job_id, idempotency_key, as_json)
        return
    request = PullRequest(reference, platforms, all_platforms, options, name)
    job = enqueue_pull(request, job_id=job_id, idempotency_key=idempotency_key, client=client)
    if not wait:
        if as_json:
            echo_json({"job": job.id, "state": job.state.value})
        else:
            click.echo(job.id)
        return
    tty = sys.stderr.isatty() and not as_json
    _follow(job, timeout, tty, quiet or as_json)
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
    as_json: bool,
) -> None:
    from ingestq.fetch.reference import parse_blob_reference
    from ingestq.fetch.registry.client import RegistryClient, blob_spec
    from ingestq.store.codec import info_to_json
    from ingestq.store.values import Descriptor
    from ingestq.tasks.client import enqueue_ingest

    ref = parse_blob_reference(reference)
    assert ref.digest is not None
    with RegistryClient(options) as registry:
        size = registry.blob_size(ref, Descriptor(ref.digest))
    desc = Descriptor(ref.digest, size)
    spec = blob_spec(ref, desc, options)
    job = enqueue_ingest(
        spec, digest=str(ref.digest), size=size, media_type=desc.media_type,
        job_id=job_id, idempotency_key=idempotency_key, client=client,
    )  # fmt: skip
    if not wait:
        click.echo(json.dumps({"job": job.id}) if as_json else job.id)
        return
    info = job.wait(timeout)
    if as_json:
        echo_json({"job": job.id, "ref": job.ref, **info_to_json(info)})
    else:
        click.echo(str(info.digest))


@click.command("images")
@click.option("-q", "--quiet", is_flag=True, help="Print names only.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@root_option
@handle_errors
def images_cmd(quiet: bool, as_json: bool, root: Path | None) -> None:
    """List the images the store's index.json holds: NAME TYPE DIGEST SIZE PLATFORMS.

    DIGEST is the image's own digest (the registry's); an image recorded through an OCI
    view (a Docker schema2 image) shows the view's digest under "recorded" in --json."""
    from ingestq.images.size import list_images
    from ingestq.worker.cli.common import open_cli_store

    images = list_images(open_cli_store(root))
    if as_json:
        echo_json([image.to_json() for image in images])
        return
    if quiet:
        for image in images:
            click.echo(image.name)
        return
    header = ("NAME", "TYPE", "DIGEST", "SIZE", "PLATFORMS")
    table = [
        (
            i.name,
            _short_type(i.media_type),
            i.digest,
            human_bytes(i.size) if i.size is not None else "-",
            ",".join(i.platforms) or "-",
        )
        for i in images
    ]
    widths = [max(len(str(x[i])) for x in (header, *table)) for i in range(len(header))]
    for line in (header, *table):
        click.echo("  ".join(f"{c!s:<{w}}" for c, w in zip(line, widths, strict=True)).rstrip())


def _short_type(media_type: str) -> str:
    from ingestq.fetch import manifests

    return {
        manifests.OCI_INDEX: "oci-index",
        manifests.OCI_MANIFEST: "oci-manifest",
        manifests.DOCKER_MANIFEST_LIST: "docker-list",
        manifests.DOCKER_MANIFEST: "docker-manifest",
    }.get(media_type, media_type)


def register(cli: click.Group) -> None:
    """Add this module's commands to the main group."""
    cli.add_command(pull_cmd)
    cli.add_command(images_cmd)
