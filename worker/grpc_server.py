"""The ``ingestq serve`` process: containerd's API over the local store, with the same
ref locks as the workers.

The store is a :class:`store.LocalStore` whose writers take the host-local file lock
and, when Redis is configured (``INGESTQ_LOCK_URL`` or ``INGESTQ_REDIS_URL``, read with
:class:`ingestq.jobs.config.Settings`), the Redis lease of
:class:`ingestq.tasks.lease.RedisLeaseLocker`,
so a ``ctr content ingest`` racing a worker on one ref behaves like two workers.
``tasks`` is imported only in that case.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from ingestq import errdefs
from ingestq.api.server import STREAM_IDLE_TIMEOUT, ApiServer, Listen
from ingestq.store import ChainLocker, FileRefLocker, LocalStore, RefLocker, Store
from ingestq.store.budget import Budget

log = logging.getLogger("ingestq.serve")


@dataclass(frozen=True)
class ServeOptions:
    """How ``ingestq serve`` runs (the bounds are :class:`ApiServer`'s; ``max_streams``
    None picks its default)."""

    root: Path
    listen: Sequence[Listen]
    max_workers: int = 64
    max_streams: int | None = None
    stream_idle_timeout: float = STREAM_IDLE_TIMEOUT
    lock_wait: float = 1.0
    grace: float = 5.0
    budget: Budget = field(default_factory=Budget)
    #: ``s3://BUCKET/PREFIX``: serve the S3 store there (the root keeps only what is
    #: host-local: lock files, leases, the image index); None: the local store at root.
    store_url: str | None = None


def redis_configured(env: Mapping[str, str]) -> bool:
    """Whether a Redis URL for leases is configured."""
    return bool(env.get("INGESTQ_LOCK_URL") or env.get("INGESTQ_REDIS_URL"))


def build_lockers(env: Mapping[str, str] | None = None) -> list[RefLocker]:
    """The extra ref lockers from the environment: the Redis lease when configured,
    else none (the store always takes its host file lock). InvalidArgument for a bad
    configuration (see :class:`ingestq.jobs.config.Settings`)."""
    env = os.environ if env is None else env
    if not redis_configured(env):
        return []
    from ingestq.jobs.config import Settings
    from ingestq.tasks.lease import RedisLeaseLocker

    settings = Settings.from_env(env)
    assert settings.lock_url is not None
    return [RedisLeaseLocker(settings.lock_url, ttl=settings.lease_ttl)]


def _check_bindable(tcp: str) -> None:
    """Unavailable naming ``tcp`` (``host:port``) when it cannot be bound, found with a
    plain socket before grpc tries (which would log its own error lines)."""
    name, _, port = tcp.rpartition(":")
    host = name.strip("[]") or None
    try:
        infos = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, ValueError) as e:
        raise errdefs.Unavailable(f"cannot listen on {tcp}: {e}") from e
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as e:
            raise errdefs.Unavailable(f"cannot listen on {tcp}: {e.strerror or e}") from e


def build_server(
    opts: ServeOptions, lockers: Sequence[RefLocker] = (), *, fsync: bool = True
) -> ApiServer:
    """An :class:`ApiServer` over ``LocalStore(opts.root, lockers)`` (or the S3 store
    of ``opts.store_url``) bound to every address of ``opts`` (not started).
    InvalidArgument for bounds that do not fit; Unavailable naming the address when one
    cannot be bound (in use, not local); Unimplemented for a free-space reserve on an
    S3 store."""
    for where in opts.listen:
        if where.tcp is not None:
            _check_bindable(where.tcp)
    store: Store
    if opts.store_url is not None:
        from ingestq.s3 import open_s3_store

        host = FileRefLocker(opts.root / "locks")
        store = open_s3_store(
            opts.store_url, opts.root, ChainLocker([host, *lockers]), budget=opts.budget
        )
    else:
        store = LocalStore(opts.root, lockers, fsync=fsync, budget=opts.budget)
    server = ApiServer(
        store,
        opts.root,
        max_workers=opts.max_workers,
        max_streams=opts.max_streams,
        stream_idle_timeout=opts.stream_idle_timeout,
        lock_wait=opts.lock_wait,
    )
    for where in opts.listen:
        try:
            server.listen(where)
        except RuntimeError as e:  # grpc's "Failed to bind to address ..."
            server.stop(0)  # removes the sockets already bound
            address = where.tcp if where.unix is None else f"unix://{where.unix}"
            raise errdefs.Unavailable(
                f"cannot listen on {address}: address in use or not available on this host"
            ) from e
    return server


def serve(
    opts: ServeOptions,
    *,
    env: Mapping[str, str] | None = None,
    on_ready: Callable[[ApiServer], None] | None = None,
) -> None:
    """Run the server until SIGTERM or SIGINT, then stop it gracefully (running calls
    get ``opts.grace`` seconds; open Write streams keep their partial data)."""
    env = os.environ if env is None else env
    fsync = env.get("INGESTQ_FSYNC", "1") != "0"
    server = build_server(opts, build_lockers(env), fsync=fsync)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        if on_ready is not None:
            on_ready(server)
        stopping.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        log.info("stopping")
        server.stop(opts.grace)
