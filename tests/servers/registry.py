"""Debian's ``docker-registry`` (distribution 2.8) on a free loopback port.

The registry runs with its own generated config: filesystem storage in a temp
directory, ``storage.delete.enabled: true``, no upload purging, and its access log in a
file, so tests can count requests such as ``GET /v2/<repo>/blobs/<digest>``.

With a :class:`TokenServer`, the registry uses distribution's ``silly`` auth: every
request without an ``Authorization`` header gets a real ``401`` with
``WWW-Authenticate: Bearer realm="<token server>/token",service="...",scope="..."``,
and any ``Authorization`` value is accepted. The token server answers the realm with a
JSON token, so a client's whole Bearer handshake runs over real HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.servers.util import (
    LOOPBACK,
    ServerProcess,
    ServerStartError,
    free_port,
    require_binary,
    started,
    wait_until,
)

#: How many fresh ports a first start tries when another process took the chosen one.
PORT_ATTEMPTS = 5

#: The query parameter of the requests that :meth:`Registry.sync_log` sends.
_SYNC_PARAM = "ingestq-log-sync"

_ACCESS_LINE = re.compile(
    r'^(?P<remote>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<uri>\S+) [^"]*" '
    r"(?P<status>\d{3}) (?P<size>\d+|-)"
)
_BLOB_PATH = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>[^/]+)$")


@dataclass(frozen=True)
class AccessLogEntry:
    """One line of the registry's access log (Apache combined format)."""

    method: str
    uri: str
    status: int
    size: int

    @property
    def path(self) -> str:
        """The request path without its query string."""
        return self.uri.split("?", 1)[0]


@dataclass(frozen=True)
class TokenRequest:
    """A request that reached the :class:`TokenServer`."""

    path: str
    service: str | None
    scopes: tuple[str, ...]
    authorization: str | None
    query: Mapping[str, tuple[str, ...]]


class TokenServer:
    """A tiny Bearer token endpoint on a loopback port, run in a background thread.

    ``GET /token?service=...&scope=...`` returns ``{"token", "access_token",
    "expires_in", "issued_at"}`` with a fresh random token. Every request is recorded
    in :attr:`requests`.

    Args:
        expires_in: the ``expires_in`` value (seconds) put in responses.
        credentials: if set, ``(user, password)`` that requests must send as Basic auth;
            others get 401 with ``WWW-Authenticate: Basic``.
    """

    def __init__(
        self, *, expires_in: int = 300, credentials: tuple[str, str] | None = None
    ) -> None:
        self.expires_in = expires_in
        self.credentials = credentials
        self.requests: list[TokenRequest] = []
        self.issued: list[str] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port the token server listens on (after :meth:`start`)."""
        if self._httpd is None:
            raise RuntimeError("token server is not started")
        port: int = self._httpd.server_address[1]
        return port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def realm(self) -> str:
        """The realm URL to put in the registry's challenge: ``<url>/token``."""
        return f"{self.url}/token"

    def start(self) -> None:
        """Bind a free loopback port and serve in a daemon thread."""
        if self._httpd is not None:
            return
        handler = _make_token_handler(self)
        self._httpd = ThreadingHTTPServer((LOOPBACK, 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="token-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _record(self, request: TokenRequest, token: str | None) -> None:
        with self._lock:
            self.requests.append(request)
            if token is not None:
                self.issued.append(token)

    def _authorized(self, header: str | None) -> bool:
        if self.credentials is None:
            return True
        expected = base64.b64encode(":".join(self.credentials).encode()).decode()
        return header == f"Basic {expected}"


def _make_token_handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(parsed.query)
            auth = self.headers.get("Authorization")
            scopes: list[str] = []
            for value in query.get("scope", []):
                scopes.extend(value.split(" "))
            request = TokenRequest(
                path=parsed.path,
                service=query.get("service", [None])[0],
                scopes=tuple(scopes),
                authorization=auth,
                query={k: tuple(v) for k, v in query.items()},
            )
            if parsed.path != "/token":
                server._record(request, None)
                self._reply(404, {"errors": [{"code": "NOT_FOUND", "message": "no such path"}]})
                return
            if not server._authorized(auth):
                server._record(request, None)
                self._reply(
                    401,
                    {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                    {"WWW-Authenticate": 'Basic realm="token-server"'},
                )
                return
            token = f"tok-{secrets.token_hex(12)}"
            server._record(request, token)
            issued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self._reply(
                200,
                {
                    "token": token,
                    "access_token": token,
                    "expires_in": server.expires_in,
                    "issued_at": issued_at,
                },
            )

        def _reply(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the default stderr logging."""

    return Handler


def _yaml(value: Any, indent: int = 0) -> str:
    """Render nested dicts of scalars as block YAML (strings double-quoted, JSON style)."""
    pad = "  " * indent
    lines: list[str] = []
    for key, item in value.items():
        if isinstance(item, Mapping):
            lines.append(f"{pad}{key}:")
            lines.append(_yaml(item, indent + 1))
        else:
            lines.append(f"{pad}{key}: {json.dumps(item)}")
    return "\n".join(line for line in lines if line)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


class Registry:
    """One ``docker-registry serve`` process on ``127.0.0.1:<port>``.

    Storage and port are fixed for the life of the handle, so :meth:`stop` then
    :meth:`start` brings back the same registry with the same content, and the access
    log keeps growing across restarts.

    Args:
        directory: holds ``config.yml``, ``registry.log`` and ``storage/``.
        token_server: a started :class:`TokenServer` to use as the ``silly`` auth realm;
            None for an open registry.
        service: the ``service`` named in Bearer challenges.
        port: a fixed port, or None to pick a free one at the first start.
        extra_config: merged (recursively) into the generated config, e.g.
            ``{"storage": {"maintenance": {"readonly": {"enabled": True}}}}``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        token_server: TokenServer | None = None,
        service: str = "ingestq-test-registry",
        port: int | None = None,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.dir = directory
        self.token_server = token_server
        self.service = service
        self.extra_config = dict(extra_config or {})
        self.config_path = directory / "config.yml"
        self.log_path = directory / "registry.log"
        self.storage_dir = directory / "storage"
        self._fixed_port = port is not None
        self._port = port if port is not None else free_port()
        self._process: ServerProcess | None = None

    @property
    def port(self) -> int:
        """The TCP port; the same across restarts."""
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as used in image references (``HOST/repo:tag``)."""
        return f"{LOOPBACK}:{self._port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        """True while the registry process is alive."""
        return self._process is not None and self._process.running

    @property
    def token_auth(self) -> bool:
        """True when the registry challenges with Bearer (silly auth)."""
        return self.token_server is not None

    def auth_headers(self) -> dict[str, str]:
        """Headers that get a request past auth: ``{}`` for an open registry.

        For a token-auth registry this is a static ``Authorization: Bearer ...`` (silly
        auth accepts any value); it does not go through the token server.
        """
        return {"Authorization": "Bearer ingestq-test-fixture"} if self.token_auth else {}

    def config(self) -> dict[str, Any]:
        """The registry configuration as a dict (what :meth:`start` writes as YAML)."""
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {
                "level": "info",
                "formatter": "text",
                "accesslog": {"disabled": False},
            },
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {"addr": self.host, "secret": "ingestq-test-secret"},
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.token_server is not None:
            config["auth"] = {"silly": {"realm": self.token_server.realm, "service": self.service}}
        return _merge(config, self.extra_config)

    def start(self, timeout: float = 20.0) -> None:
        """Write the config, start the registry and wait until ``GET /v2/`` answers.

        Ready means 200 for an open registry and 401 with a Bearer challenge for a
        token-auth one.

        Raises:
            MissingToolError: ``docker-registry`` is not installed (run scripts/test).
            ServerStartError: the process exited first; the log tail is included.
            WaitTimeout: no answer within ``timeout`` seconds.
        """
        if self.running:
            return
        binary = require_binary("docker-registry")
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._fixed_port else PORT_ATTEMPTS
        for attempt in range(attempts):
            self.config_path.write_text(_yaml(self.config()) + "\n")
            process = ServerProcess(
                "docker-registry",
                [binary, "serve", str(self.config_path)],
                self.log_path,
                # No REGISTRY_* variable from the environment may override our config.
                env={k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")},
            )
            process.spawn()
            self._process = process
            try:
                wait_until(
                    self._ready,
                    timeout,
                    f"docker-registry GET {self.url}/v2/",
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
            self._fixed_port = True
            return

    def _ready(self) -> bool:
        response = httpx.get(f"{self.url}/v2/", timeout=1.0)
        if self.token_auth:
            return response.status_code == 401 and response.headers.get(
                "www-authenticate", ""
            ).startswith("Bearer ")
        return response.status_code == 200

    def stop(self, *, kill: bool = False, timeout: float = 15.0) -> None:
        """Stop the registry (SIGTERM, or SIGKILL with ``kill=True``); storage is kept."""
        if self._process is not None:
            self._process.stop(kill=kill, timeout=timeout)

    def restart(self) -> None:
        """:meth:`stop` then :meth:`start`, same port, storage and log."""
        self.stop()
        self.start()

    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` with ``base_url=self.url`` and :meth:`auth_headers` set.

        ``kwargs`` go to ``httpx.Client``; the caller closes it (use ``with``).
        """
        headers = {**self.auth_headers(), **dict(kwargs.pop("headers", {}))}
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.url, headers=headers, **kwargs)

    def log_text(self) -> str:
        """The registry's whole log (app log and access log interleaved)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def sync_log(self, timeout: float = 10.0) -> None:
        """Wait until requests that already got their response are in the access log.

        distribution writes an access-log line just after the handler returns, which
        can be a moment after a client has read the last byte of the body. This sends
        one marked ``GET /v2/`` and waits for its line to appear.
        """
        marker = secrets.token_hex(8)
        httpx.get(f"{self.url}/v2/", params={_SYNC_PARAM: marker}, timeout=timeout)
        needle = f"{_SYNC_PARAM}={marker}"
        wait_until(lambda: needle in self.log_text(), timeout, "registry access-log sync")

    def access_log(self, *, sync: bool = True) -> list[AccessLogEntry]:
        """Parsed access-log lines, oldest first (the :meth:`sync_log` probes left out)."""
        if sync:
            self.sync_log()
        entries: list[AccessLogEntry] = []
        for line in self.log_text().splitlines():
            match = _ACCESS_LINE.match(line)
            if match is None or _SYNC_PARAM in match["uri"]:
                continue
            size = match["size"]
            entries.append(
                AccessLogEntry(
                    method=match["method"],
                    uri=match["uri"],
                    status=int(match["status"]),
                    size=int(size) if size != "-" else 0,
                )
            )
        return entries

    def blob_gets(
        self,
        digest: str,
        repo: str | None = None,
        *,
        statuses: Collection[int] | None = None,
        sync: bool = True,
    ) -> list[AccessLogEntry]:
        """Access-log entries of ``GET /v2/<repo>/blobs/<digest>`` (HEADs not included).

        Args:
            digest: ``sha256:<hex>``.
            repo: only this repository; None for any.
            statuses: only these HTTP statuses (e.g. ``{200, 206}`` to leave out the
                401 challenges of a token-auth registry); None for all.
            sync: call :meth:`sync_log` first.
        """
        found: list[AccessLogEntry] = []
        for entry in self.access_log(sync=sync):
            if entry.method != "GET":
                continue
            match = _BLOB_PATH.match(entry.path)
            if match is None or match["digest"] != digest:
                continue
            if repo is not None and match["repo"] != repo:
                continue
            if statuses is not None and entry.status not in statuses:
                continue
            found.append(entry)
        return found

    def count_blob_gets(
        self,
        digest: str,
        repo: str | None = None,
        *,
        statuses: Collection[int] | None = None,
        sync: bool = True,
    ) -> int:
        """How many ``GET /v2/<repo>/blobs/<digest>`` requests the registry logged.

        Counts every status unless ``statuses`` is given: on a token-auth registry a
        fetch that is first challenged shows up as a 401 and then a 200. See
        :meth:`blob_gets` for the arguments.
        """
        return len(self.blob_gets(digest, repo, statuses=statuses, sync=sync))

    def close(self) -> None:
        """Stop the registry."""
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        auth = " token-auth" if self.token_auth else ""
        return f"<Registry {self.url}{auth} {state} dir={self.dir}>"


#: The type of the ``registry_factory`` fixture:
#: ``(*, token_auth: bool = False, **Registry options) -> Registry``.
RegistryFactory = Callable[..., Registry]


def running_token_server(**options: Any) -> AbstractContextManager[TokenServer]:
    """Run a :class:`TokenServer` for the duration of the block."""
    return started(TokenServer(**options))


@contextmanager
def running_registry(directory: Path, **options: Any) -> Iterator[Registry]:
    """Start a :class:`Registry` in ``directory`` and stop it on exit.

    ``options`` are :class:`Registry` keyword arguments.
    """
    server = Registry(directory, **options)
    try:
        server.start()
        yield server
    finally:
        server.close()


@contextmanager
def running_token_auth_registry(directory: Path, **options: Any) -> Iterator[Registry]:
    """A :class:`Registry` with silly Bearer auth and its own :class:`TokenServer`."""
    with (
        running_token_server() as tokens,
        running_registry(directory, token_server=tokens, **options) as reg,
    ):
        yield reg
