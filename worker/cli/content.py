"""``ingestq content``: the local store from the command line, after ``ctr content``.

=========================================  =============================================
``ingest FILE|- --ref R``                  write FILE (or stdin) as one blob; resumes an
                                           unfinished ingest of R; waits while R is locked
``info DIGEST``                            a blob's Info
``get DIGEST``                             a blob's bytes on stdout (checked against the
                                           digest: DataLoss at the end if they differ)
``ls [FILTER...]``                         ``DIGEST SIZE AGE LABELS`` (``-q``: digests)
``rm [--force] DIGEST...``                 delete blobs; unknown ones are skipped silently, one
                                           a recorded image uses is refused unless --force
``label DIGEST [k=v|k=|k]...``             set (``k`` means ``k=true``) or delete (``k=``)
                                           labels; prints the labels
``active [FILTER]``                        ingests in progress: ``REF SIZE AGE HOLDER``
``abort REF``                              drop an unfinished ingest
=========================================  =============================================

Like ``ctr``, ingesting content that already exists succeeds silently (with ``--json`` it
prints the existing Info, ``"existed": true``). The read commands take ``--json``.
Errors print ``ingestq: <Kind>: <message>`` (or a JSON error record with ``--json``) and
exit with 10 + the gRPC code of their kind (see ``ingestq --help``).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, Info, LocalStore, Status, copy, open_writer
from ingestq.store.codec import info_to_json, status_to_json
from ingestq.store.fdcopy import FdCopier, copy_fd
from ingestq.store.oserrors import from_os_error
from ingestq.worker.cli.common import (
    echo_json,
    handle_errors,
    hidden_alias,
    max_bytes_option,
    open_cli_store,
    parse_labels,
    report,
    root_option,
)

if TYPE_CHECKING:
    from ingestq.s3 import S3Store

READ_CHUNK = 1 << 20

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _store(
    root: Path | None, max_bytes: str | None = None, write: bool = False
) -> LocalStore | S3Store:
    """The store (:func:`open_cli_store`); a command that only reads needs an existing
    local root (NotFound)."""
    return open_cli_store(root, max_bytes=max_bytes, write=write)


def human_size(size: float) -> str:
    """Docker's ``units.HumanSize``: 4 significant digits, decimal units (``1.049MB``)."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.4g}{units[i]}"


def human_duration(seconds: float) -> str:
    """Docker's ``units.HumanDuration`` (``About a minute``, ``3 hours``, ...)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def _age(ts: datetime) -> str:
    return human_duration((datetime.now(UTC) - ts).total_seconds())


def _labels_text(labels: Iterable[tuple[str, str]]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels))


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=False)] + [r[-1]]
        click.echo("  ".join(cells).rstrip())


def _digest(text: str) -> Digest:
    return Digest.parse(text)


def _open_source(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as e:
        raise from_os_error(e, f"open {path}") from e


@click.group("content")
def content_group() -> None:
    """Manage the content store (blobs and ingests), like "ctr content"."""


@content_group.command("ingest")
@click.argument("source", metavar="FILE|-")
@click.option("--ref", required=True, help="The ingest's name (resumed if unfinished).")
@click.option(
    "--digest", "expected_digest", default=None, help="Fail unless the content has this digest."
)
@click.option(
    "--size", "expected_size", type=int, default=0, help="Fail unless it has this many bytes."
)
@hidden_alias("--expected-digest", "old_expected_digest", "--digest")
@hidden_alias("--expected-size", "old_expected_size", "--size", type=int)
@click.option("--label", "labels", multiple=True, help="k=v label to commit (repeatable).")
@click.option(
    "--timeout", type=float, default=None, help="Seconds to wait for a locked ref (default: ever)."
)
@root_option
@max_bytes_option
@json_option
@handle_errors
def ingest_cmd(
    source: str,
    ref: str,
    expected_digest: str | None,
    expected_size: int,
    old_expected_digest: str | None,
    old_expected_size: int | None,
    labels: tuple[str, ...],
    timeout: float | None,
    root: Path | None,
    max_bytes: str | None,
    as_json: bool,
) -> None:
    """Ingest FILE ("-" for stdin) as one blob and print its digest and size.

    An unfinished ingest of the same ref is resumed (a file is seeked; stdin is read
    and discarded up to the stored offset). While another writer holds the ref this
    waits (saying so once on stderr) until it is free or the content exists. Content
    that already exists succeeds silently.
    """
    expected_digest = expected_digest or old_expected_digest
    expected_size = expected_size or old_expected_size or 0
    if expected_size < 0:
        raise errdefs.InvalidArgument(f"--size {expected_size} is negative")
    digest = _digest(expected_digest) if expected_digest else None
    label_map = parse_labels(labels)
    store = _store(root, max_bytes, write=True)
    src = _open_source(source)
    try:
        size = expected_size or _regular_file_size(src)
        desc = Descriptor(digest, size) if digest is not None else None
        info: Info | None = None
        existing = digest
        waited: list[errdefs.Unavailable] = []

        def note(e: errdefs.Unavailable) -> None:
            if not waited:
                click.echo(f"ingestq: waiting: {e}", err=True)
            waited.append(e)

        try:
            writer = open_writer(store, ref, desc, timeout=timeout, on_wait=note)
        except errdefs.AlreadyExists:
            pass
        else:
            with writer:
                if isinstance(writer, FdCopier) and _regular_file_size(src):
                    info = copy_fd(writer, src.fileno(), size, digest, label_map)
                else:
                    info = copy(writer, src, size, digest, label_map)
                existing = writer.digest()
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    if info is None:  # the content already existed
        if as_json and existing is not None:
            echo_json({**info_to_json(store.info(existing)), "existed": True})
        return
    if as_json:
        echo_json({**info_to_json(info), "existed": False})
    else:
        click.echo(f"{info.digest} {info.size}")


def _regular_file_size(src: IO[bytes]) -> int:
    """The size of a regular file (0, unknown, for pipes, terminals and devices)."""
    try:
        st = os.fstat(src.fileno())
    except (OSError, ValueError):
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


@content_group.command("info")
@click.argument("digest")
@root_option
@json_option
@handle_errors
def info_cmd(digest: str, root: Path | None, as_json: bool) -> None:
    """Show a blob's Info."""
    info = _store(root).info(_digest(digest))
    if as_json:
        echo_json(info_to_json(info))
        return
    click.echo(f"digest:     {info.digest}")
    click.echo(f"size:       {info.size}")
    click.echo(f"created at: {info.created_at.isoformat()}")
    click.echo(f"updated at: {info.updated_at.isoformat()}")
    click.echo(f"labels:     {_labels_text(info.labels.items()) or '-'}")


@content_group.command("get")
@click.argument("digest")
@root_option
@handle_errors
def get_cmd(digest: str, root: Path | None) -> None:
    """Write a blob's bytes to stdout (DataLoss if they do not match the digest)."""
    d = _digest(digest)
    out = sys.stdout.buffer
    hasher = d.hasher()
    with _store(root).reader_at(d) as ra:
        offset = 0
        while offset < ra.size:
            chunk = ra.read_at(offset, READ_CHUNK)
            if not chunk:
                break
            hasher.update(chunk)
            out.write(chunk)
            offset += len(chunk)
    out.flush()
    if offset != ra.size or hasher.hexdigest() != d.encoded:
        raise errdefs.DataLoss(f"content {d} on disk does not match its digest")


@content_group.command("ls")
@click.argument("filters", nargs=-1)
@click.option("-q", "--quiet", is_flag=True, help="Print only the digests.")
@root_option
@json_option
@handle_errors
def ls_cmd(filters: tuple[str, ...], quiet: bool, root: Path | None, as_json: bool) -> None:
    """List blobs matching any FILTER (digest, labels.<key>; containerd syntax)."""
    infos = list(_store(root).walk(*filters))
    if as_json:
        echo_json([info_to_json(i) for i in infos])
    elif quiet:
        for i in infos:
            click.echo(str(i.digest))
    else:
        _table(
            ("DIGEST", "SIZE", "AGE", "LABELS"),
            (
                (
                    str(i.digest),
                    human_size(i.size),
                    _age(i.created_at),
                    _labels_text(i.labels.items()) or "-",
                )
                for i in infos
            ),
        )


@content_group.command("rm")
@click.argument("digests", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Delete blobs that recorded images use too.")
@root_option
@handle_errors
def rm_cmd(digests: tuple[str, ...], force: bool, root: Path | None) -> None:
    """Delete blobs; print each one deleted. Unknown blobs are skipped silently; a blob
    a recorded image uses is refused (FailedPrecondition naming the image) unless
    --force; other errors are reported and the first one sets the exit status."""
    from ingestq.jobs.gc import image_trees

    store = _store(root)
    trees = {} if force else image_trees(store)
    status = 0
    for text in digests:
        try:
            d = _digest(text)
            users = sorted(name for name, tree in trees.items() if d in tree)
            if users and store.exists(d):
                raise errdefs.FailedPrecondition(
                    f"content {d} is used by image {', '.join(users)} (--force deletes it)"
                )
            store.delete(d)
        except errdefs.NotFound:
            continue
        except errdefs.ErrdefsError as e:
            # Each error is reported once, here; the first sets the exit status.
            code = report(errdefs.wrap(e, f"unable to delete {text}"))
            status = status or code
            continue
        click.echo(str(d))
    if status:
        sys.exit(status)


@content_group.command("label")
@click.argument("digest")
@click.argument("labels", nargs=-1)
@root_option
@json_option
@handle_errors
def label_cmd(digest: str, labels: tuple[str, ...], root: Path | None, as_json: bool) -> None:
    """Set labels (k=v; k alone is k=true), delete them (k=), and print
    the blob's labels as k=v,.... Without labels, just print them."""
    store = _store(root)
    d = _digest(digest)
    if labels:
        changes = parse_labels(labels)
        now = datetime.now(UTC)
        info = store.update(Info(d, 0, now, now, changes), *(f"labels.{k}" for k in changes))
    else:
        info = store.info(d)
    if as_json:
        echo_json(dict(info.labels))
    else:
        click.echo(_labels_text(info.labels.items()))


@content_group.command("active")
@click.argument("filter_", metavar="[FILTER]", required=False, default="")
@root_option
@json_option
@handle_errors
def active_cmd(filter_: str, root: Path | None, as_json: bool) -> None:
    """List ingests in progress (ref filters, e.g. ref~=layer): offset, age
    since the start, and who holds each one now."""
    statuses = _store(root).list_statuses(filter_)
    if as_json:
        echo_json([status_to_json(s) for s in statuses])
        return

    def holder(st: Status) -> str:
        h = st.holder
        return f"{h.host}:{h.pid}" if h is not None else "-"

    _table(
        ("REF", "SIZE", "AGE", "HOLDER"),
        ((s.ref, human_size(s.offset), _age(s.started_at), holder(s)) for s in statuses),
    )


@content_group.command("abort")
@click.argument("ref")
@root_option
@handle_errors
def abort_cmd(ref: str, root: Path | None) -> None:
    """Drop the unfinished ingest REF (Unavailable while a writer holds it)."""
    _store(root).abort(ref)


def register(cli: click.Group) -> None:
    """Add the ``content`` group to the main group."""
    cli.add_command(content_group)
