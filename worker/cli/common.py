"""What every ``ingestq`` command shares: the store root option, error reporting and
exit codes per error kind."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from ingestq import errdefs
from ingestq.s3 import S3Store
from ingestq.store.local import LocalStore

P = ParamSpec("P")
R = TypeVar("R")

#: Exit status per errdefs kind: 10 + the gRPC code (Unknown = 12). 1 is reserved for
#: unexpected crashes, 2 for usage errors (click).
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


def resolve_root(root: Path | None) -> Path:
    """The store root from the option or the environment."""
    return root if root is not None else default_root()


def open_cli_store(root: Path | None) -> LocalStore | S3Store:
    """The store a command works on: the S3 store of ``$INGESTQ_STORE`` (``s3://...``)
    when set, with ``root`` for what stays local; else the local store at ``root``."""
    url = os.environ.get("INGESTQ_STORE")
    if not url:
        return LocalStore(resolve_root(root))
    from ingestq.jobs.config import Settings, open_store

    return open_store(Settings(root=resolve_root(root), store_url=url))


def exit_code_for(err: BaseException) -> int:
    """The documented exit status for an error."""
    return EXIT_CODES.get(errdefs.resolve(err).name, EXIT_CODES["Unknown"])


def report(err: BaseException, as_json: bool = False) -> int:
    """Print ``ingestq: <Kind>: <message>`` (or a JSON error record) to stderr and return
    the exit code."""
    e = errdefs.from_exception(err)
    if as_json:
        click.echo(json.dumps({"error": errdefs.to_json_dict(e)}), err=True)
    else:
        click.echo(f"ingestq: {type(e).name}: {e}", err=True)
    return exit_code_for(e)


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
