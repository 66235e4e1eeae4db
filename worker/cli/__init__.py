"""The ``ingestq`` command line. Each command family lives in its own module and
registers itself on the main group."""

from __future__ import annotations

import click

from ingestq.worker.cli import content, gc, images, jobs, pull, serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ingestq")
def cli() -> None:
    """ingestq: a content-addressable blob store fed by a job queue.

    Exit status: 0 success; 1 unexpected failure; 2 usage error; otherwise 10 + the gRPC
    code of the error kind: 12 Unknown, 13 InvalidArgument, 15 NotFound, 16 AlreadyExists,
    17 PermissionDenied, 18 ResourceExhausted, 19 FailedPrecondition, 20 Aborted,
    21 OutOfRange, 22 NotImplemented, 23 Internal, 24 Unavailable, 25 DataLoss,
    26 Unauthenticated, 11 Canceled, 14 DeadlineExceeded.
    """


for _module in (content, gc, images, jobs, pull, serve):
    _module.register(cli)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ingestq")
