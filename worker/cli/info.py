"""``ingestq info``: what this command line would use: the store root (and whether it
exists), the mode (embedded or queue), the Redis URLs with their passwords hidden, the
roots file sources may read, the store's size, the workers online and the version."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import click

from ingestq import errdefs
from ingestq.worker.cli.common import (
    echo_json,
    handle_errors,
    require_root,
    root_option,
    settings_for,
    verbose_option,
)
from ingestq.worker.cli.progress import human_bytes


def ingestq_version() -> str:
    """The installed version of ingestq (``unknown`` when not installed)."""
    try:
        return version("ingestq")
    except PackageNotFoundError:
        return "unknown"


def store_size(root: Path) -> tuple[int, int]:
    """(blobs, bytes) committed under ``root`` (0, 0 when it has none)."""
    count = total = 0
    for dirpath, _dirs, files in os.walk(root / "blobs"):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
            count += 1
    return count, total


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@verbose_option
@root_option
@handle_errors
def info_cmd(as_json: bool, root: Path | None) -> None:
    """Show the store root, mode, Redis URLs (passwords hidden), file roots, store size,
    workers online and version. Exits with NotFound's status when the root does not
    exist (after printing the rest)."""
    from ingestq.jobs.config import hide_password

    settings = settings_for(root)
    exists = settings.root.is_dir()
    blobs, size = store_size(settings.root) if exists else (0, 0)
    if settings.file_roots is not None:
        file_roots: list[str] | None = [str(p) for p in settings.file_roots]
    else:
        file_roots = [] if settings.queued else None
    workers: dict[str, list[str]] | None = None
    workers_error = ""
    if settings.queued:
        from ingestq.tasks.queue import QueueClient

        client = QueueClient(settings)
        try:
            workers = client.consumers(timeout=1.0)
        except errdefs.Unavailable as e:
            workers_error = str(e)
        finally:
            client.close()
    out: dict[str, Any] = {
        "version": ingestq_version(),
        "mode": "queue" if settings.queued else "embedded",
        "root": str(settings.root),
        "root_exists": exists,
        "blobs": blobs,
        "size": size,
        "file_roots": file_roots,
        "broker_url": hide_password(settings.broker_url),
        "result_url": hide_password(settings.result_url),
        "lock_url": hide_password(settings.lock_url),
        "workers": workers,
    }
    if as_json:
        echo_json(out)
    else:
        click.echo(f"version:    {out['version']}")
        click.echo(f"mode:       {out['mode']}")
        click.echo(f"root:       {out['root']}" + ("" if exists else "  (does not exist)"))
        click.echo(f"store:      {blobs} blobs, {human_bytes(size)}")
        if file_roots is None:
            click.echo("file roots: any (embedded: files this user can read)")
        else:
            click.echo(f"file roots: {', '.join(file_roots) or 'none'}")
        if settings.queued:
            click.echo(f"broker:     {out['broker_url']}")
            if out["result_url"] != out["broker_url"]:
                click.echo(f"results:    {out['result_url']}")
            if out["lock_url"] != out["broker_url"]:
                click.echo(f"locks:      {out['lock_url']}")
            if workers_error:
                click.echo(f"workers:    unknown ({workers_error})")
            else:
                names = sorted(workers or {})
                click.echo(
                    f"workers:    {len(names)} online" + (": " + ", ".join(names) if names else "")
                )
        else:
            click.echo("workers:    none (embedded: jobs run in the calling process)")
    if not exists:
        require_root(settings.root)


def register(cli: click.Group) -> None:
    """Add this module's commands to the main group."""
    cli.add_command(info_cmd)
