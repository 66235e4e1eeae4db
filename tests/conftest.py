"""Shared pytest fixtures: real servers on free 127.0.0.1 ports.

Servers and helpers live in :mod:`tests.servers`; these fixtures only start and stop
them. A fixture whose binary is missing errors out with a message to run
``scripts/test`` (which installs them); nothing here skips.

Fixtures:
    redis_factory: function; ``redis_factory(**RedisServer options) -> RedisServer``.
    redis_server: function; a fresh AOF-enabled :class:`RedisServer`.
    redis_session: session; one :class:`RedisServer` shared by the whole run.
    redis_url: function; ``redis_session.url`` after FLUSHALL.
    registry_factory: function; ``registry_factory(token_auth=False, **Registry
        options) -> Registry``.
    registry: function; an open :class:`Registry`.
    registry_token_auth: function; a :class:`Registry` with silly Bearer auth whose
        realm is a live :class:`TokenServer` (``registry_token_auth.token_server``).
    containerd_daemon: function; a running :class:`ContainerdDaemon`.
    seaweed: session; one SeaweedFS (``weed server`` with its S3 gateway).
    s3_endpoint: function; the session SeaweedFS's :class:`S3Endpoint`.
    s3_bucket: module; a fresh bucket on it for the test module (its name).
    radosgw: session; one throwaway Ceph (mon, memstore OSD, ``radosgw``).
    s3_prefix: function; a fresh key prefix for the test (isolation inside the bucket).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.servers.containerd import ContainerdDaemon
from tests.servers.radosgw import RadosgwServer, running_radosgw
from tests.servers.redis_server import RedisFactory, RedisServer
from tests.servers.registry import Registry, RegistryFactory, TokenServer
from tests.servers.seaweed import S3Endpoint, SeaweedServer, running_seaweed
from tests.tasks.blobserver import BlobServer


@pytest.fixture
def blob_server() -> Iterator[BlobServer]:
    """A :class:`tests.tasks.blobserver.BlobServer` on a free 127.0.0.1 port, serving
    blobs with the behaviours a test gives them (ranges, validators, cuts, trickles)."""
    server = BlobServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisFactory]:
    """Start any number of :class:`RedisServer` s; all are stopped after the test.

    Call it with :class:`RedisServer` keyword arguments, e.g.
    ``redis_factory(appendfsync="always")``. Each server gets its own directory.
    """
    servers: list[RedisServer] = []

    def start(**options: Any) -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis"), **options)
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def redis_server(redis_factory: RedisFactory) -> RedisServer:
    """A fresh ``redis-server`` for this test (``--appendonly yes --appendfsync everysec``).

    ``.stop(kill=...)`` then ``.start()`` restarts it on the same port and directory.
    """
    return redis_factory()


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One ``redis-server`` for the whole session (use :func:`redis_url` to get it flushed)."""
    server = RedisServer(tmp_path_factory.mktemp("redis-session"), appendonly=False)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_session: RedisServer) -> str:
    """The session Redis URL (``redis://127.0.0.1:PORT/0``), flushed before the test."""
    if not redis_session.running:
        redis_session.start()  # a previous test stopped it
    redis_session.flushall()
    return redis_session.url


@pytest.fixture
def registry_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryFactory]:
    """Start any number of registries; all are stopped after the test.

    ``registry_factory(token_auth=False, **options)``: ``options`` are
    :class:`Registry` keyword arguments (``extra_config=...``, ``service=...``);
    ``token_auth=True`` also starts a :class:`TokenServer` as its realm.
    """
    with ExitStack() as stack:

        def start(*, token_auth: bool = False, **options: Any) -> Registry:
            if token_auth and "token_server" not in options:
                tokens = TokenServer()
                tokens.start()
                stack.callback(tokens.stop)
                options["token_server"] = tokens
            server = Registry(tmp_path_factory.mktemp("registry"), **options)
            stack.callback(server.close)
            server.start()
            return server

        yield start


@pytest.fixture
def registry(registry_factory: RegistryFactory) -> Registry:
    """An open ``docker-registry`` on 127.0.0.1 (``.url``, ``.host``, ``.log_path``)."""
    return registry_factory()


@pytest.fixture
def registry_token_auth(registry_factory: RegistryFactory) -> Registry:
    """A ``docker-registry`` that answers 401 + ``Bearer realm=...`` without a token.

    Its realm is ``.token_server`` (a live :class:`TokenServer`); any
    ``Authorization`` header is accepted.
    """
    return registry_factory(token_auth=True)


@pytest.fixture
def containerd_daemon(tmp_path: Path) -> Iterator[ContainerdDaemon]:
    """A private ``containerd`` (needs root); drive it with ``.ctr(...)``."""
    daemon = ContainerdDaemon(tmp_path / "containerd")
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.close()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One SeaweedFS (master, volume, filer, S3 gateway) for the whole session."""
    with running_seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture(scope="session")
def radosgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadosgwServer]:
    """One throwaway Ceph with its S3 gateway for the whole session (started by the
    first test that asks for it: only the slow radosgw contract does)."""
    with running_radosgw(tmp_path_factory.mktemp("radosgw")) as server:
        yield server


@pytest.fixture
def s3_endpoint(seaweed: SeaweedServer) -> S3Endpoint:
    """The session SeaweedFS's S3 endpoint and credentials."""
    return seaweed.endpoint


@pytest.fixture(scope="module")
def s3_bucket(seaweed: SeaweedServer) -> str:
    """A fresh bucket for the test module. SeaweedFS gives every bucket volumes of its
    own, so tests share their module's bucket and isolate by :func:`s3_prefix`."""
    return seaweed.endpoint.new_bucket()


@pytest.fixture
def s3_prefix() -> str:
    """A fresh key prefix for this test."""
    return f"t-{uuid.uuid4().hex[:12]}"
