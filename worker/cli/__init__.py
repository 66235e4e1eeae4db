"""The ``ingestq`` command line. Each command family lives in its own module and
registers itself on the main group."""

from __future__ import annotations

import sys
from typing import Any

import click

from ingestq.worker.cli import content, gc, images, info, jobs, pull, serve
from ingestq.worker.cli.common import EXIT_INTERRUPTED


class IngestqGroup(click.Group):
    """The main group: Ctrl-C anywhere ends the command with exit status 130 (a shell's
    128 + SIGINT) instead of click's ``Aborted!`` and 1."""

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


for _module in (content, gc, images, info, jobs, pull, serve):
    _module.register(cli)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ingestq")
