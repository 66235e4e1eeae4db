"""The ``ingestq`` command line. Each command family lives in its own module and
registers itself on the main group.

The modules load on first use (:class:`IngestqGroup`): ``ingestq --help`` imports none
of them, and a command imports only its own module, so Celery, kombu and redis load only
for queue commands and grpc only for ``serve``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

#: Exit status of an interrupted command (a shell's 128 + SIGINT); the same as
#: ``common.EXIT_INTERRUPTED``, which --help does not import (it loads errdefs).
EXIT_INTERRUPTED = 130

#: Each top-level command: the module under ``ingestq.worker.cli`` that registers it,
#: and the start of its help for ``ingestq --help`` (tests/worker/test_cli_lazy.py
#: checks both against the commands themselves).
COMMANDS: dict[str, tuple[str, str]] = {
    "active": ("jobs", "List every live ingest (across all workers with Redis; in this host's "
               "store without): source (or ref), holder, bytes, rate and ETA."),
    "content": ("content", 'Manage the content store (blobs and ingests), like "ctr content".'),
    "df": ("gc", "Show the store's disk use and what gc would reclaim now."),
    "gc": ("gc", "Remove what nothing references: blobs no image, lease, gc.root label or "
           "unexpired producer request keeps; idle partial ingests; orphan resume hints; old "
           "job records; expired leases; temporary files of killed writers; damaged blobs "
           "quarantined longer than INGESTQ_GC_QUARANTINE_MAX_AGE."),
    "images": ("images", "List the images the store's index.json holds: NAME TYPE DIGEST SIZE "
               "PLATFORMS."),
    "info": ("info", "Show the store root, mode, Redis URLs (passwords hidden), file roots, "
             "store size, workers online and version."),
    "ingest": ("jobs", "Ingest SOURCE (an http(s) URL or a file path) into the store."),
    "job": ("jobs", "List, inspect, wait for or cancel jobs."),
    "pull": ("pull", "Pull image REFERENCE into the store and record it under its full name."),
    "serve": ("serve", "Serve containerd's content gRPC API over the store, so `ctr -a SOCKET "
              "content ...` (ingest, ls, get, active, rm, label, fetch) works against ingestq."),
    "worker": ("jobs", "Run a Celery worker of the project's app (the same as \"celery -A "
               "ingestq.tasks.app worker\")."),
}  # fmt: skip


def load_module(name: str) -> Any:
    """Import command module ``ingestq.worker.cli.<name>`` and register its commands on
    :data:`cli` (once)."""
    module = importlib.import_module(f"ingestq.worker.cli.{name}")
    if name not in _registered:
        _registered.add(name)
        module.register(cli)
        from ingestq.worker.cli.common import add_verbose

        for command in cli.commands.values():
            add_verbose(command)
    return module


_registered: set[str] = set()


class IngestqGroup(click.Group):
    """The main group: commands load lazily from :data:`COMMANDS`; Ctrl-C anywhere ends
    the command with exit status 130 (a shell's 128 + SIGINT) instead of click's
    ``Aborted!`` and 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, without importing the modules."""
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``, importing its module on first use."""
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            load_module(COMMANDS[cmd_name][0])
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help``, from :data:`COMMANDS` (no module loads)."""
        names = sorted(COMMANDS)
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = [(n, click.Command(n, help=COMMANDS[n][1]).get_short_help_str(limit)) for n in names]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a KeyboardInterrupt exits 130 with ``ingestq: interrupted``."""
        try:
            return super().invoke(ctx)
        except (KeyboardInterrupt, click.Abort):
            sys.stderr.write("\ningestq: interrupted\n")
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=IngestqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ingestq", prog_name="ingestq", message="%(prog)s %(version)s")
def cli() -> None:
    """ingestq: a content-addressable blob store fed by a job queue.

    Exit status: 0 success; 1 unexpected failure; 2 usage error; 130 interrupted
    (Ctrl-C); otherwise 10 + the gRPC
    code of the error kind: 12 Unknown, 13 InvalidArgument, 15 NotFound, 16 AlreadyExists,
    17 PermissionDenied, 18 ResourceExhausted, 19 FailedPrecondition, 20 Aborted,
    21 OutOfRange, 22 NotImplemented, 23 Internal, 24 Unavailable, 25 DataLoss,
    26 Unauthenticated, 11 Canceled, 14 DeadlineExceeded.
    """


def load_all() -> click.Group:
    """:data:`cli` with every command module loaded (for tools that walk the tree)."""
    for module in sorted({m for m, _ in COMMANDS.values()}):
        load_module(module)
    return cli


def _exit_now(code: object) -> None:
    """End the process with ``code`` (a ``SystemExit`` code) without the interpreter's
    teardown, when nothing is left to finish: only the main thread runs (no job thread,
    no pool thread whose work an exit would have to wait for). Tearing down the modules
    and objects of the Celery, kombu and redis stack costs a queued command ~50 ms after
    its output is written. Returns (the caller exits normally) otherwise."""
    threading = sys.modules.get("threading")  # not loaded: no other thread either
    if threading is not None and threading.active_count() != 1:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return  # the normal exit reports a broken pipe as usual
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.shutdown()  # flush the handlers, as the normal exit does
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        sys.stderr.write(f"{code}\n")
        sys.stderr.flush()
        status = 1
    os._exit(status)


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="ingestq")
    except SystemExit as e:
        _exit_now(e.code)
        raise
