"""What every ``ingestq`` command shares: the store root option, error reporting and
exit codes per error kind."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from ingestq import errdefs
from ingestq.store.budget import Budget, parse_size

if TYPE_CHECKING:
    from ingestq.jobs.api import JobClient
    from ingestq.jobs.config import Settings
    from ingestq.s3 import S3Store
    from ingestq.store.local import LocalStore

P = ParamSpec("P")
R = TypeVar("R")

#: Exit status per errdefs kind: 10 + the gRPC code (Unknown = 12). 1 is reserved for
#: unexpected crashes, 2 for usage errors (click), 130 for an interrupt (Ctrl-C).
EXIT_CODES: dict[str, int] = {name: 10 + cls.grpc_code for name, cls in errdefs.KINDS.items()}


def default_root() -> Path:
    """``$INGESTQ_ROOT``, else ``$XDG_DATA_HOME/ingestq``, else ``~/.local/share/ingestq``."""
    env = os.environ.get("INGESTQ_ROOT")
    if env:
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "ingestq"


root_option = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Store root (default: $INGESTQ_ROOT or the user's data directory).",
)

#: The exit status of a command interrupted by Ctrl-C (128 + SIGINT, as shells do).
EXIT_INTERRUPTED = 130


max_bytes_option = click.option(
    "--max-bytes",
    default=None,
    metavar="SIZE",
    help="Cap the bytes the store's blobs, ingests and quarantined files may hold when "
    "this process writes it (10G, 512M, 1.5T; default: $INGESTQ_MAX_BYTES). Workers read "
    "the environment.",
)


def store_budget(max_bytes: str | None = None, base: Budget | None = None) -> Budget:
    """The disk budget of a store this process opens: ``base`` (default: from
    ``$INGESTQ_MAX_BYTES`` and ``$INGESTQ_MIN_FREE``) with ``--max-bytes`` over it.
    InvalidArgument for a malformed size."""
    if base is None:
        base = Budget.parse(os.environ.get("INGESTQ_MAX_BYTES"), os.environ.get("INGESTQ_MIN_FREE"))
    if max_bytes is None:
        return base
    return dataclasses.replace(base, max_bytes=parse_size(max_bytes))


def resolve_root(root: Path | None) -> Path:
    """The store root from the option or the environment."""
    return root if root is not None else default_root()


def require_root(root: Path) -> Path:
    """``root`` when it is an existing directory. NotFound naming it otherwise: only
    commands that write create a store root, so that a mistyped ``--root`` or
    ``INGESTQ_ROOT`` never silently shows an empty store."""
    if not root.is_dir():
        raise errdefs.NotFound(
            f"store root {root} does not exist (check --root/INGESTQ_ROOT; "
            "commands that write, such as ingest and pull, create it)"
        )
    return root


def settings_for(root: Path | None, max_bytes: str | None = None) -> Settings:
    """The settings of the environment, with ``root`` when given and ``--max-bytes``
    over the environment's disk budget (:func:`store_budget`)."""
    from ingestq.jobs.config import Settings

    settings = Settings.from_env()
    settings = dataclasses.replace(settings, budget=store_budget(max_bytes, settings.budget))
    return dataclasses.replace(settings, root=root) if root is not None else settings


def job_client(root: Path | None, *, write: bool, max_bytes: str | None = None) -> JobClient:
    """The job backend of the environment. A command that only reads (``write`` False)
    on the embedded backend needs an existing store root (:func:`require_root`)."""
    from ingestq.tasks.client import connect

    settings = settings_for(root, max_bytes)
    if not settings.queued and not write:
        require_root(settings.root)
    return connect(settings)


#: The help of ``-q/--quiet`` on the commands that start jobs.
QUIET_HELP = "Print only the result: no job id, progress or messages."


def quiet_option(fn: Callable[P, R]) -> Callable[P, R]:
    """``-q/--quiet`` (see :data:`QUIET_HELP`)."""
    return click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)(fn)


def events_json_option(fn: Callable[P, R]) -> Callable[P, R]:
    """``--json`` of the commands that wait for a job: the result as JSON on stdout,
    progress as one JSON event per line on stderr."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print the result as JSON; progress as JSON events on stderr.",
    )(fn)


def retries_option(fn: Callable[P, R]) -> Callable[P, R]:
    """``--retries N``: the most retries of an Unavailable source for the job."""
    return click.option(
        "--retries",
        type=click.IntRange(min=0),
        default=None,
        help="Retries of an unavailable source (default: $INGESTQ_MAX_SOURCE_RETRIES).",
    )(fn)


def submit_options(fn: Callable[P, R]) -> Callable[P, R]:
    """``--job-id`` and ``--idempotency-key`` of the commands that start a job."""
    fn = click.option("--idempotency-key", default=None, help="Enqueue at most once per key.")(fn)
    return click.option("--job-id", default=None, help="Choose the job id.")(fn)


def hidden_alias(
    name: str, dest: str, replacement: str, **attrs: Any
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A hidden option ``name`` into parameter ``dest``: an old spelling of
    ``replacement``, still accepted (the command merges ``dest`` into the new one)."""
    attrs.setdefault("default", None)
    return click.option(name, dest, hidden=True, help=f"Old spelling of {replacement}.", **attrs)


def _log_verbosely(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value:
        logging.basicConfig(
            level=logging.DEBUG if value > 1 else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    return value


def verbose_param() -> click.Option:
    """A ``-v/--verbose`` option (repeatable): log ingestq's own messages to stderr at
    INFO (``-v``) or DEBUG (``-vv``)."""
    return click.Option(
        ["-v", "--verbose"], count=True, expose_value=False, callback=_log_verbosely,
        help="Log what ingestq does to stderr (-vv: debug).",
    )  # fmt: skip


def verbose_option(fn: Callable[P, R]) -> Callable[P, R]:
    """``-v/--verbose`` on a command (see :func:`verbose_param`)."""
    params: list[click.Parameter] = fn.__dict__.setdefault("__click_params__", [])
    params.append(verbose_param())
    return fn


def add_verbose(command: click.Command) -> None:
    """Give ``command`` (and, for a group, every subcommand) ``-v/--verbose`` where it
    has none."""
    if not any("--verbose" in getattr(p, "opts", ()) for p in command.params):
        command.params.append(verbose_param())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_verbose(sub)


def open_cli_store(
    root: Path | None, *, max_bytes: str | None = None, write: bool = False
) -> LocalStore | S3Store:
    """The store a command works on: the S3 store of ``$INGESTQ_STORE`` (``s3://...``)
    when set, with ``root`` for what stays local; else the local store at ``root`` with
    the disk budget (:func:`store_budget`), where a command that only reads
    (``write`` False) needs an existing root (:func:`require_root`)."""
    url = os.environ.get("INGESTQ_STORE")
    if not url:
        from ingestq.store.local import LocalStore

        path = resolve_root(root)
        return LocalStore(path if write else require_root(path), budget=store_budget(max_bytes))
    from ingestq.jobs.config import Settings, open_store

    settings = Settings(root=resolve_root(root), store_url=url, budget=store_budget(max_bytes))
    return open_store(settings)


def exit_code_for(err: BaseException) -> int:
    """The documented exit status for an error."""
    return EXIT_CODES.get(errdefs.resolve(err).name, EXIT_CODES["Unknown"])


def report(err: BaseException, as_json: bool = False) -> int:
    """Print ``ingestq: <Kind>: <message>`` (or, with ``as_json``, ``{"error": <error
    record>, "exit_status": N}``: the record carries the gRPC ``code``) on a line of its
    own on stderr and return the exit status."""
    e = errdefs.from_exception(err)
    status = exit_code_for(e)
    if as_json:
        click.echo(json.dumps({"error": errdefs.to_json_dict(e), "exit_status": status}),
                   err=True)  # fmt: skip
    else:
        click.echo(f"ingestq: {type(e).name}: {e}", err=True)
    return status


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn errdefs errors raised by a command into a message and the kind's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except errdefs.ErrdefsError as e:
            as_json = bool(kwargs.get("as_json", False))
            sys.exit(report(e, as_json))
        except (OSError, ValueError) as e:
            as_json = bool(kwargs.get("as_json", False))
            sys.exit(report(errdefs.from_exception(e), as_json))

    return wrapper


def parse_labels(values: tuple[str, ...]) -> dict[str, str]:
    """``k=v`` pairs from repeated ``--label`` options (``k`` alone means ``k=true``)."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not key:
            raise errdefs.InvalidArgument(f"label {item!r} has no key")
        out[key] = value if sep else "true"
    return out


def echo_json(obj: Any) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(obj, sort_keys=True, default=str))
