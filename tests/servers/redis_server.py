"""A real ``redis-server`` on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import redis

from tests.servers.util import (
    LOOPBACK,
    ServerProcess,
    ServerStartError,
    free_port,
    require_binary,
    wait_until,
)

AppendFsync = Literal["always", "everysec", "no"]

#: How many fresh ports a first start tries when another process took the chosen one.
PORT_ATTEMPTS = 5


class RedisServer:
    """One ``redis-server`` process bound to ``127.0.0.1:<port>`` with its data in ``dir``.

    The port and the data directory are fixed for the life of the handle, so
    :meth:`stop` then :meth:`start` restarts the same server: with ``appendonly=True``
    everything that reached the AOF survives (all of it after a SIGTERM; with
    ``appendfsync="everysec"`` up to about a second may be lost after ``kill=True``).

    Args:
        directory: the server's ``--dir`` (AOF, logs); created if missing.
        port: a fixed port, or None to pick a free one at the first start.
        appendonly: ``--appendonly yes|no``.
        appendfsync: ``--appendfsync`` policy.
        save: the ``--save`` value; "" disables RDB snapshots.
        extra_args: more ``redis-server`` arguments, e.g. ``["--maxmemory", "10mb"]``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: AppendFsync = "everysec",
        save: str = "",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.dir = directory
        self.appendonly = appendonly
        self.appendfsync: AppendFsync = appendfsync
        self.save = save
        self.extra_args = list(extra_args)
        self.log_path = directory / "redis.log"
        self._fixed_port = port is not None
        self._port = port if port is not None else free_port()
        self._process: ServerProcess | None = None
        self._clients: list[redis.Redis] = []

    @property
    def host(self) -> str:
        """The address the server listens on: ``127.0.0.1``."""
        return LOOPBACK

    @property
    def port(self) -> int:
        """The TCP port; the same across restarts."""
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{LOOPBACK}:{self._port}/0"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        """PID of the running server, or None."""
        return self._process.pid if self._process is not None else None

    def _argv(self, binary: str) -> list[str]:
        return [
            binary,
            "--bind",
            LOOPBACK,
            "--port",
            str(self._port),
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            "--save",
            self.save,
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--logfile",
            "",
            *self.extra_args,
        ]

    def start(self, timeout: float = 20.0) -> None:
        """Start the server (or restart it on the same port and directory) and wait for PING.

        Raises:
            MissingToolError: ``redis-server`` is not installed (run scripts/test).
            ServerStartError: the process exited before answering; the log tail is included.
            WaitTimeout: no PONG within ``timeout`` seconds (e.g. a long AOF load).
        """
        if self.running:
            return
        binary = require_binary("redis-server")
        self.dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._fixed_port else PORT_ATTEMPTS
        for attempt in range(attempts):
            process = ServerProcess("redis-server", self._argv(binary), self.log_path)
            process.spawn()
            self._process = process
            try:
                wait_until(
                    self._ping,
                    timeout,
                    f"redis-server PING on {LOOPBACK}:{self._port}",
                    abort=process.exit_reason,
                )
            except ServerStartError as exc:
                process.stop()
                if attempt + 1 < attempts and "address already in use" in str(exc).lower():
                    self._port = free_port()
                    continue
                raise
            except BaseException:
                process.stop(kill=True)
                raise
            # The port is ours now: restarts must come back on it.
            self._fixed_port = True
            return

    def _ping(self) -> bool:
        conn = redis.Redis(
            host=LOOPBACK, port=self._port, socket_connect_timeout=0.5, socket_timeout=0.5
        )
        try:
            return bool(conn.ping())
        finally:
            conn.close()

    def stop(self, *, kill: bool = False, timeout: float = 15.0) -> None:
        """Stop the server: SIGTERM (Redis flushes the AOF) or SIGKILL with ``kill=True``.

        Clients made by :meth:`client` are disconnected; they reconnect on next use.
        """
        for conn in self._clients:
            conn.connection_pool.disconnect()
        if self._process is not None:
            self._process.stop(kill=kill, timeout=timeout)

    def restart(self, *, kill: bool = False) -> None:
        """:meth:`stop` then :meth:`start`, on the same port and directory."""
        self.stop(kill=kill)
        self.start()

    def client(self, **kwargs: Any) -> redis.Redis:
        """A ``redis.Redis`` connected to this server (db 0); closed when the server closes.

        ``kwargs`` go to ``redis.Redis.from_url`` (e.g. ``decode_responses=True``).
        """
        conn = redis.Redis.from_url(self.url, **kwargs)
        self._clients.append(conn)
        return conn

    def flushall(self) -> None:
        """Delete every key in every database."""
        conn = redis.Redis.from_url(self.url)
        try:
            conn.flushall()
        finally:
            conn.close()

    def log_text(self) -> str:
        """The server's log so far (all lives of it)."""
        return self._process.log_text() if self._process is not None else ""

    def close(self) -> None:
        """Stop the server and close every client made by :meth:`client`."""
        self.stop()
        for conn in self._clients:
            conn.close()
        self._clients.clear()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.url} {state} dir={self.dir}>"


#: The type of the ``redis_factory`` fixture: ``(**RedisServer options) -> RedisServer``.
RedisFactory = Callable[..., RedisServer]


@contextmanager
def redis_with_socket(factory: RedisFactory) -> Iterator[tuple[RedisServer, Path]]:
    """A Redis from ``factory`` listening on TCP and on a unix socket (mode 700) in a
    short temporary directory, since a socket path has 107 bytes at most; the server
    and the socket's path. The directory is removed on exit."""
    short = Path(tempfile.mkdtemp(prefix="iq-sock-"))
    sock = short / "redis.sock"
    try:
        yield factory(extra_args=["--unixsocket", str(sock), "--unixsocketperm", "700"]), sock
    finally:
        shutil.rmtree(short, ignore_errors=True)


@contextmanager
def running_redis(directory: Path, **options: Any) -> Iterator[RedisServer]:
    """Start a :class:`RedisServer` in ``directory`` and stop it on exit.

    ``options`` are :class:`RedisServer` keyword arguments.
    """
    server = RedisServer(directory, **options)
    try:
        server.start()
        yield server
    finally:
        server.close()
