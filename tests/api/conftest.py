"""Fixtures for the containerd API tests: ingestq's gRPC server in-process
(:func:`api_server`) or as a real ``ingestq serve`` subprocess (:func:`serve_process`),
and :func:`ctr` to drive either with containerd's real ``ctr``.

Sockets live in short ``/tmp/iq-*`` directories (unix socket paths are limited to ~107
bytes). Readiness is always checked by connecting (a Version RPC), never by sleeping.
"""

from __future__ import annotations

import os

# Servers and tools are spawned with fork + exec (and a preexec_fn) while gRPC threads
# run in this process; gRPC's fork handlers would then crash the child before its exec.
# The children never use gRPC, so fork support is off (read when grpc is first imported).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty

from ingestq.api import rpc
from ingestq.api.client import GrpcStore, channel_for
from ingestq.api.proto.containerd.services.version.v1 import version_pb2
from ingestq.api.server import ApiServer, Listen
from ingestq.store import LocalStore, RefLocker
from tests.api.wire import Content
from tests.servers.util import ServerProcess, require_binary, wait_until

VERSION = version_pb2.DESCRIPTOR.services_by_name["Version"]


def short_dir(prefix: str = "iq-") -> Path:
    """A fresh directory with a short path under /tmp (for unix sockets)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def answers(address: str, timeout: float = 2.0) -> bool:
    """Whether a server at ``address`` answers ``Version/Version``."""
    with channel_for(address) as channel:
        call = rpc.unary_unary(channel, VERSION, "Version", Empty, version_pb2.VersionResponse)
        return bool(call(Empty(), timeout=timeout).version)


def run_ctr(
    socket: Path,
    *args: str,
    namespace: str = "default",
    input_bytes: bytes | None = None,
    stdin_path: Path | None = None,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``ctr -a SOCKET -n NAMESPACE ARGS...`` and return the completed process
    (stdout/stderr as bytes, no check)."""
    argv = [require_binary("ctr"), "-a", str(socket), "-n", namespace, *args]
    stdin = open(stdin_path, "rb") if stdin_path is not None else None  # noqa: SIM115
    try:
        return subprocess.run(
            argv,
            input=input_bytes if stdin is None else None,
            stdin=stdin,
            capture_output=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
    finally:
        if stdin is not None:
            stdin.close()


@dataclass
class Served:
    """A running server: its socket, client address, store root and (in-process) the
    LocalStore and ApiServer behind it."""

    socket: Path
    root: Path
    store: LocalStore | None = None
    server: ApiServer | None = None
    process: ServerProcess | None = None
    clients: list[GrpcStore] = field(default_factory=list)

    @property
    def address(self) -> str:
        """The ``unix://`` address."""
        return f"unix://{self.socket}"

    def client(self, namespace: str = "default", **kw: object) -> GrpcStore:
        """A :class:`GrpcStore` on this server (closed after the test)."""
        c = GrpcStore(self.address, namespace, **kw)  # type: ignore[arg-type]
        self.clients.append(c)
        return c

    def ctr(self, *args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
        """:func:`run_ctr` against this server."""
        return run_ctr(self.socket, *args, **kw)  # type: ignore[arg-type]

    def channel(self) -> grpc.Channel:
        """A new channel to the server (the caller closes it)."""
        return channel_for(self.address)

    def log(self) -> str:
        """The subprocess server's log ('' in-process)."""
        return self.process.log_text() if self.process is not None else ""


ServerFactory = Callable[..., Served]


@pytest.fixture
def api_server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start in-process servers: ``factory(lockers=(), lock_wait=0.05, root=None,
    fsync=False, max_workers=32, max_streams=None, stream_idle_timeout=60.0)``.

    Each gets a LocalStore under ``tmp_path`` unless ``root`` is given, and
    a socket in a short /tmp directory. All are stopped after the test."""
    started: list[tuple[Served, Path]] = []

    def start(
        *,
        lockers: Sequence[RefLocker] = (),
        lock_wait: float = 0.05,
        root: Path | None = None,
        fsync: bool = False,
        max_workers: int = 32,
        max_streams: int | None = None,
        stream_idle_timeout: float = 60.0,
    ) -> Served:
        root = root or tmp_path / f"store{len(started)}"
        sockdir = short_dir()
        store = LocalStore(root, lockers, fsync=fsync)
        server = ApiServer(
            store,
            root,
            max_workers=max_workers,
            max_streams=max_streams,
            stream_idle_timeout=stream_idle_timeout,
            lock_wait=lock_wait,
        )
        server.listen(Listen(unix=sockdir / "api.sock"))
        server.start()
        served = Served(socket=sockdir / "api.sock", root=root, store=store, server=server)
        started.append((served, sockdir))
        return served

    yield start
    for served, sockdir in started:
        for c in served.clients:
            c.close()
        assert served.server is not None
        served.server.stop(0)
        shutil.rmtree(sockdir, ignore_errors=True)


@pytest.fixture
def api_server(api_server_factory: ServerFactory) -> Served:
    """An in-process server over a fresh LocalStore (ref-lock wait 50 ms)."""
    return api_server_factory()


@pytest.fixture
def content(api_server: Served) -> Iterator[Content]:
    """The content service of ``api_server``, over a channel closed afterwards."""
    with api_server.channel() as channel:
        yield Content(channel)


@pytest.fixture
def store(api_server: Served) -> LocalStore:
    """The store ``api_server`` serves."""
    assert api_server.store is not None
    return api_server.store


def ingestq_argv(*args: str) -> list[str]:
    """How to run the ``ingestq`` CLI of this checkout in a subprocess."""
    return [sys.executable, "-c", "from ingestq.worker.cli import main; main()", *args]


@pytest.fixture
def serve_process_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start ``ingestq serve`` subprocesses: ``factory(*extra_args, env=None, root=None)``.

    Ready once the socket answers a Version RPC. Stopped with SIGTERM after the test
    (and must exit 0)."""
    started: list[tuple[Served, Path]] = []

    def start(
        *extra: str, env: Mapping[str, str] | None = None, root: Path | None = None
    ) -> Served:
        root = root or tmp_path / f"served{len(started)}"
        sockdir = short_dir()
        socket = sockdir / "ingestq.sock"
        argv = ingestq_argv("serve", "--address", f"unix://{socket}", "--root", str(root), *extra)
        child_env = {
            **os.environ,
            "PYTHONPATH": str(Path(__file__).parents[2]),
            "INGESTQ_FSYNC": "0",
            **(env or {}),
        }
        process = ServerProcess(
            "ingestq-serve", argv, tmp_path / f"serve{len(started)}.log", env=child_env
        )
        process.spawn()
        served = Served(socket=socket, root=root, process=process)
        started.append((served, sockdir))
        wait_until(
            lambda: answers(served.address),
            20.0,
            f"ingestq serve on {socket}",
            abort=process.exit_reason,
        )
        return served

    yield start
    for served, sockdir in started:
        for c in served.clients:
            c.close()
        assert served.process is not None
        served.process.stop(timeout=10)  # SIGTERM: a graceful stop
        shutil.rmtree(sockdir, ignore_errors=True)


@pytest.fixture
def serve_process(serve_process_factory: ServerFactory) -> Served:
    """A real ``ingestq serve`` subprocess (debug logging) over a fresh root."""
    return serve_process_factory("--log-level", "debug")
