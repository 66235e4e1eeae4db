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
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ingestq.api.server import ApiServer, Listen
from ingestq.store import ChainLocker, FileRefLocker, LocalStore, RefLocker, Store

log = logging.getLogger("ingestq.serve")


@dataclass(frozen=True)
class ServeOptions:
    """How ``ingestq serve`` runs."""

    root: Path
    listen: Sequence[Listen]
    max_workers: int = 64
    lock_wait: float = 1.0
    grace: float = 5.0
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


def build_server(
    opts: ServeOptions, lockers: Sequence[RefLocker] = (), *, fsync: bool = True
) -> ApiServer:
    """An :class:`ApiServer` over ``LocalStore(opts.root, lockers)`` (or the S3 store
    of ``opts.store_url``) bound to every address of ``opts`` (not started)."""
    store: Store
    if opts.store_url is not None:
        from ingestq.s3 import open_s3_store

        host = FileRefLocker(opts.root / "locks")
        store = open_s3_store(opts.store_url, opts.root, ChainLocker([host, *lockers]))
    else:
        store = LocalStore(opts.root, lockers, fsync=fsync)
    server = ApiServer(store, opts.root, max_workers=opts.max_workers, lock_wait=opts.lock_wait)
    for where in opts.listen:
        server.listen(where)
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
