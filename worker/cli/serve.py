"""``ingestq serve``: containerd's content API (and enough of leases, images,
introspection, version and namespaces for ``ctr``) over the store."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ingestq import errdefs
from ingestq.api.server import STREAM_IDLE_TIMEOUT, ApiServer, parse_address
from ingestq.worker.cli.common import (
    handle_errors,
    max_bytes_option,
    resolve_root,
    root_option,
    store_budget,
)


@click.command("serve")
@click.option(
    "--address",
    "-a",
    "addresses",
    multiple=True,
    envvar="INGESTQ_ADDRESS",
    help="Where to listen (repeatable): unix:///PATH.sock (mode 0660) or, only when "
    "asked, HOST:PORT for TCP. Default $INGESTQ_ADDRESS.",
)
@root_option
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM certificate: serve TCP addresses with TLS (needs --tls-key).",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM private key for --tls-cert.",
)
@click.option(
    "--max-workers",
    type=click.IntRange(min=2),
    default=64,
    show_default=True,
    help="Server threads, and so concurrent RPCs; calls beyond it are answered "
    "RESOURCE_EXHAUSTED at once.",
)
@click.option(
    "--max-streams",
    type=click.IntRange(min=1),
    default=None,
    help="Open Write and Read streams at most (below --max-workers, so unary calls "
    "always find a thread); one more is answered RESOURCE_EXHAUSTED. Default: three "
    "quarters of --max-workers.",
)
@click.option(
    "--stream-idle-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=STREAM_IDLE_TIMEOUT,
    show_default=True,
    envvar="INGESTQ_STREAM_IDLE_TIMEOUT",
    show_envvar=True,
    help="Seconds a stream may wait for its client: a Write stream that gets no message "
    "for that long ends with DEADLINE_EXCEEDED (its data is kept for a resume); a stream "
    "whose client takes no response for that long is cancelled.",
)
@click.option(
    "--lock-wait",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds a Write stream retries a locked ref before answering Unavailable.",
)
@click.option(
    "--store",
    "store_url",
    envvar="INGESTQ_STORE",
    help="s3://BUCKET/PREFIX: serve the S3 store there (the AWS environment configures "
    "the client; needs ingestq[s3]). Default $INGESTQ_STORE, else the local store at the root.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Level of ingestq's own log on stderr (other libraries log warnings only).",
)
@max_bytes_option
@handle_errors
def serve_command(
    addresses: tuple[str, ...],
    root: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    max_workers: int,
    max_streams: int | None,
    stream_idle_timeout: float,
    lock_wait: float,
    store_url: str | None,
    log_level: str,
    max_bytes: str | None,
) -> None:
    """Serve containerd's content gRPC API over the store, so `ctr -a SOCKET content
    ...` (ingest, ls, get, active, rm, label, fetch) works against ingestq.

    Writes take the same ref locks as workers (the host file lock, plus the Redis
    lease when INGESTQ_REDIS_URL or INGESTQ_LOCK_URL is set). Prints `serving on
    <address>` on stderr once ready; stops on SIGTERM or SIGINT.
    """
    from ingestq.worker.grpc_server import ServeOptions, serve

    if not addresses:
        raise errdefs.InvalidArgument("no address: pass --address unix:///PATH.sock")
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("ingestq").setLevel(log_level.upper())
    listen = [parse_address(a, tls_cert, tls_key) for a in addresses]
    if tls_cert is not None and all(w.unix is not None for w in listen):
        raise errdefs.InvalidArgument("--tls-cert applies to TCP addresses only")

    def ready(server: ApiServer) -> None:
        for address in server.addresses:
            click.echo(f"ingestq: serving on {address}", err=True)

    if max_streams is not None and max_streams >= max_workers:
        raise errdefs.InvalidArgument(
            f"--max-streams {max_streams} must be below --max-workers {max_workers}: "
            "unary calls need a thread of their own"
        )
    serve(
        ServeOptions(
            root=resolve_root(root),
            listen=listen,
            max_workers=max_workers,
            max_streams=max_streams,
            stream_idle_timeout=stream_idle_timeout,
            lock_wait=lock_wait,
            budget=store_budget(max_bytes),
            store_url=store_url or None,
        ),
        on_ready=ready,
    )


def register(cli: click.Group) -> None:
    """Add ``serve`` to the main group."""
    cli.add_command(serve_command)
