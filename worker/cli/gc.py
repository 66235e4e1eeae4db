"""``ingestq gc [--dry-run] [--json]`` and ``ingestq df [--json]``.

``gc`` runs one mark and sweep over the store (:mod:`ingestq.store.gc`) plus the finished
job records past ``INGESTQ_GC_JOB_RETENTION``, and prints what it removed (with
``--dry-run``, what it would remove). ``df`` shows what the store holds (docker's
``system df``): blobs, per image its size, the bytes only it holds and those it shares,
plain ingests, partial ingests, job records, and what gc would reclaim now.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ingestq.worker.cli.common import echo_json, handle_errors, resolve_root, root_option
from ingestq.worker.cli.progress import human_bytes

if TYPE_CHECKING:
    from ingestq.jobs.config import Settings
    from ingestq.s3 import S3Store
    from ingestq.store.local import LocalStore


def _open(root: Path | None) -> tuple[LocalStore | S3Store, Settings]:
    from ingestq.jobs.config import Settings, open_store

    settings = dataclasses.replace(Settings.from_env(), root=resolve_root(root))
    if settings.store_url is None:
        return open_store(settings), settings
    # On S3, gc takes the blob locks of writers on every host: the Redis lease when set.
    from ingestq.worker.grpc_server import build_lockers

    return open_store(settings, build_lockers()), settings


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Print what would go; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@root_option
@handle_errors
def gc_cmd(dry_run: bool, as_json: bool, root: Path | None) -> None:
    """Remove what nothing references: blobs no image, lease, gc.root label or unexpired
    producer request keeps; idle partial ingests; orphan resume hints; old job records;
    expired leases; temporary files of killed writers; damaged blobs quarantined longer
    than INGESTQ_GC_QUARANTINE_MAX_AGE."""
    from ingestq.jobs.gc import run_gc

    store, settings = _open(root)
    report = run_gc(store, settings, dry_run=dry_run)
    if as_json:
        echo_json(report.to_json())
        return
    verb = "would remove" if dry_run else "removed"
    if not dry_run:
        for digest, _ in report.blobs:
            click.echo(f"blob     {digest}")
        for ref, _ in report.ingests:
            click.echo(f"ingest   {ref}")
        for lease in report.leases:
            click.echo(f"lease    {lease}")
        for name, _ in report.quarantined:
            click.echo(f"quarantine {name}")
    click.echo(
        f"{verb}: {len(report.blobs)} blobs ({human_bytes(report.bytes)}), "
        f"{len(report.ingests)} ingests ({human_bytes(report.ingest_bytes)}), "
        f"{report.job_records} job records, {len(report.leases)} leases, "
        f"{report.resume_hints} resume hints, {report.temp_files} temporary files, "
        f"{len(report.quarantined)} quarantined ({human_bytes(report.quarantine_bytes)}); "
        f"kept {report.kept_blobs} blobs "
        f"({human_bytes(report.kept_bytes)}) in {report.seconds:.2f}s"
    )


@click.command("df")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@root_option
@handle_errors
def df_cmd(as_json: bool, root: Path | None) -> None:
    """Show the store's disk use and what gc would reclaim now."""
    from ingestq.jobs.gc import disk_usage

    store, settings = _open(root)
    use = disk_usage(store, settings)
    if as_json:
        echo_json(use.to_json())
        return
    r = use.reclaimable
    click.echo(f"Blobs:            {use.blobs}  {human_bytes(use.bytes)}")
    click.echo(f"Plain ingests:    {use.requested_blobs}  {human_bytes(use.requested_bytes)}")
    oldest = use.oldest_partial.isoformat() if use.oldest_partial else "-"
    click.echo(
        f"Partial ingests:  {use.partial_ingests}  {human_bytes(use.partial_bytes)}"
        f"  oldest {oldest}"
    )
    click.echo(f"Job records:      {use.job_records}  {human_bytes(use.job_record_bytes)}")
    if use.quarantined:  # a local store's damaged blobs, moved aside
        click.echo(f"Quarantined:      {use.quarantined}  {human_bytes(use.quarantine_bytes)}")
    click.echo(
        f"Reclaimable now:  {len(r.blobs)} blobs {human_bytes(r.bytes)}, "
        f"{len(r.ingests)} ingests {human_bytes(r.ingest_bytes)}, {r.job_records} job records, "
        f"{len(r.quarantined)} quarantined {human_bytes(r.quarantine_bytes)}"
    )
    if use.images:
        click.echo("")
        header = ("IMAGE", "BLOBS", "SIZE", "UNIQUE", "SHARED")
        rows = [
            (i.name, str(i.blobs), human_bytes(i.size), human_bytes(i.unique),
             human_bytes(i.shared))
            for i in use.images
        ]  # fmt: skip
        widths = [max(len(x[k]) for x in (header, *rows)) for k in range(len(header))]
        for line in (header, *rows):
            click.echo("  ".join(f"{c:<{w}}" for c, w in zip(line, widths, strict=True)).rstrip())


def register(cli: click.Group) -> None:
    """Add this module's commands to the main group."""
    cli.add_command(gc_cmd)
    cli.add_command(df_cmd)
