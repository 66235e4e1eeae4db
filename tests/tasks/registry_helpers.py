"""Helpers of the registry and pull tests.

:class:`RegistryFront` is a real HTTP(S) server on a loopback port in front of a real
``docker-registry``: it forwards every request and streams the answer back, and on
purpose it can

* log each request with its headers (``Authorization``, ``Range``, ``Accept``),
* answer a scripted status first (``429`` with ``Retry-After``, ``503``, ...),
* redirect blob GETs to another origin (blob storage),
* demand Basic credentials itself (a Basic-auth registry),
* hold a blob body at an offset until the test opens the gate (deterministic
  "mid-download", no sleeps),
* corrupt a body (one byte flipped).

Also: images with random layers pushed over the HTTP API, docker ``config.json``
files, and a self-signed CA and server certificate made with ``openssl``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import oci
from tests.servers.registry import Registry

MiB = 1 << 20

_FORWARD_REQUEST = ("authorization", "range", "accept", "accept-encoding", "if-range")
_FORWARD_RESPONSE = (
    "content-type",
    "content-length",
    "content-range",
    "docker-content-digest",
    "www-authenticate",
    "etag",
    "accept-ranges",
    "retry-after",
    "location",
)


@dataclass
class Rule:
    """What the front does with requests whose ``METHOD path`` matches ``pattern``."""

    pattern: str
    responses: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    redirect_to: str | None = None
    gate_offset: int | None = None
    gate: threading.Event = field(default_factory=threading.Event)
    gate_reached: threading.Event = field(default_factory=threading.Event)
    corrupt: bool = False
    hits: int = 0


@dataclass
class FrontRequest:
    """One request the front received, and how it answered. Logged before the answer's
    headers go out (so a client that has its answer always finds it); ``sent`` grows
    while the body is sent and ``done`` is set after the last byte."""

    method: str
    path: str
    headers: Mapping[str, str]
    status: int
    sent: int = 0
    done: threading.Event = field(default_factory=threading.Event)


class RegistryFront:
    """A forwarding front for ``upstream`` (a registry URL) on ``bind``:<free port>.

    Args:
        upstream: ``http://127.0.0.1:PORT`` of the real registry.
        host_name: the host name in :attr:`url` (``localhost`` gives another origin
            than ``127.0.0.1`` on the same machine).
        basic: ``(user, password)`` the front demands itself (401 + Basic challenge).
        upstream_headers: headers added to every forwarded request (e.g. a static
            ``Authorization`` for a storage front in front of a token-auth registry).
        tls: ``(certfile, keyfile)`` to serve HTTPS.
    """

    def __init__(
        self,
        upstream: str,
        *,
        host_name: str = "127.0.0.1",
        basic: tuple[str, str] | None = None,
        upstream_headers: Mapping[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.host_name = host_name
        self.basic = basic
        self.upstream_headers = dict(upstream_headers or {})
        self.rules: list[Rule] = []
        self.log: list[FrontRequest] = []
        self._mutex = threading.Lock()
        self._client = httpx.Client(timeout=60.0)
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                front._handle(self, "GET")

            def do_HEAD(self) -> None:
                front._handle(self, "HEAD")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        """``<host name>:<port>``, as used in image references."""
        return f"{self.host_name}:{self._httpd.server_address[1]}"

    @property
    def url(self) -> str:
        """``http(s)://<host>``."""
        return f"{self.scheme}://{self.host}"

    def start(self) -> RegistryFront:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Open every gate, stop serving, close the upstream client."""
        for rule in self.rules:
            rule.gate.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._client.close()

    def rule(self, pattern: str, **kwargs: Any) -> Rule:
        """Add a :class:`Rule` for requests matching ``pattern`` (``"GET /v2/.../blobs/"``)."""
        r = Rule(pattern, **kwargs)
        self.rules.append(r)
        return r

    def requests(self, method: str | None = None, contains: str = "") -> list[FrontRequest]:
        """Logged requests, optionally of ``method`` and with ``contains`` in the path."""
        with self._mutex:
            return [
                r for r in self.log if (method is None or r.method == method) and contains in r.path
            ]

    def _record(self, entry: FrontRequest) -> None:
        with self._mutex:
            self.log.append(entry)

    def _match(self, method: str, path: str) -> Rule | None:
        for rule in self.rules:
            if re.search(rule.pattern, f"{method} {path}"):
                return rule
        return None

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        headers = {k.lower(): v for k, v in h.headers.items()}
        path = h.path
        if self.basic is not None:
            expected = "Basic " + base64.b64encode(":".join(self.basic).encode()).decode()
            if headers.get("authorization") != expected:
                body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
                self._reply(h, method, path, headers, 401, {
                    "WWW-Authenticate": 'Basic realm="front"',
                    "Content-Type": "application/json",
                }, body)  # fmt: skip
                return
        rule = self._match(method, path)
        if rule is not None:
            rule.hits += 1
            if rule.responses:
                status, extra, body = rule.responses.pop(0)
                self._reply(h, method, path, headers, status, extra, body)
                return
            if rule.redirect_to is not None and method == "GET":
                self._reply(
                    h, method, path, headers, 307, {"Location": rule.redirect_to + path}, b""
                )
                return
        self._forward(h, method, path, headers, rule)

    def _reply(
        self,
        h: BaseHTTPRequestHandler,
        method: str,
        path: str,
        headers: Mapping[str, str],
        status: int,
        extra: Mapping[str, str],
        body: bytes,
    ) -> None:
        entry = FrontRequest(method, path, dict(headers), status)
        self._record(entry)
        h.send_response(status)
        for k, v in extra.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(body)
            entry.sent = len(body)
        entry.done.set()

    def _forward(
        self,
        h: BaseHTTPRequestHandler,
        method: str,
        path: str,
        headers: Mapping[str, str],
        rule: Rule | None,
    ) -> None:
        out = {k: v for k, v in headers.items() if k in _FORWARD_REQUEST}
        out.update(self.upstream_headers)
        request = self._client.build_request(method, self.upstream + path, headers=out)
        response = self._client.send(request, stream=True)
        entry = FrontRequest(method, path, dict(headers), response.status_code)
        self._record(entry)
        try:
            h.send_response(response.status_code)
            for k in _FORWARD_RESPONSE:
                if k in response.headers:
                    h.send_header(k, response.headers[k])
            h.end_headers()
            if method == "HEAD":
                return
            offset = 0
            content_range = response.headers.get("content-range", "")
            m = re.match(r"bytes (\d+)-", content_range)
            if m:
                offset = int(m.group(1))
            for chunk in response.iter_raw(1 << 16):
                data = chunk
                if rule is not None and rule.corrupt and entry.sent == 0 and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                if rule is not None and rule.gate_offset is not None:
                    pos = offset + entry.sent
                    cut = rule.gate_offset - pos
                    if 0 <= cut < len(data) and not rule.gate.is_set():
                        h.wfile.write(data[:cut])
                        h.wfile.flush()
                        entry.sent += cut
                        data = data[cut:]
                        rule.gate_reached.set()
                        rule.gate.wait()
                h.wfile.write(data)
                entry.sent += len(data)
            h.wfile.flush()
        except (httpx.HTTPError, OSError):
            h.close_connection = True
        finally:
            response.close()
            entry.done.set()


def random_layers(count: int, size: int) -> list[bytes]:
    """``count`` layers of ``size`` random bytes each."""
    return [os.urandom(size) for _ in range(count)]


def push_multiplatform(
    registry: Registry,
    repo: str,
    tag: str,
    *,
    flavor: oci.Flavor = "oci",
    shared: bytes | None = None,
) -> oci.Index:
    """Push an index (or Docker manifest list) for linux/amd64 and linux/arm64/v8; each
    image has its own layer and, if given, a ``shared`` layer. Returns the built index."""
    images = []
    for plat in (oci.Platform("linux", "amd64"), oci.Platform("linux", "arm64", "v8")):
        layers = [os.urandom(4096)] + ([shared] if shared is not None else [])
        images.append(oci.build_image(layers, platform=plat, flavor=flavor))
    index = oci.build_index(images, flavor=flavor)
    oci.push_index(registry, repo, tag, images, flavor=flavor)
    return index


def docker_config(path: Path, auths: Mapping[str, tuple[str, str]]) -> Path:
    """Write a docker ``config.json`` whose ``auths`` hold base64 ``user:password``."""
    doc = {
        "auths": {
            host: {"auth": base64.b64encode(f"{user}:{pw}".encode()).decode()}
            for host, (user, pw) in auths.items()
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def make_tls(
    directory: Path,
    names: Sequence[str] = ("localhost", "127.0.0.1"),
    ca_name: str = "ingestq test CA",
) -> dict[str, Path]:
    """A CA named ``ca_name`` and a server certificate for ``names`` (made with the
    ``openssl`` binary).

    Returns paths ``ca``, ``cert``, ``key``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "ext.cnf"
    alt = ",".join(f"IP:{n}" if n[0].isdigit() else f"DNS:{n}" for n in names)
    ext.write_text(f"subjectAltName={alt}\nbasicConstraints=CA:FALSE\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
        str(ca), "-days", "2", "-subj", f"/CN={ca_name}")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", f"/CN={names[0]}")  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return {"ca": ca, "cert": cert, "key": key}


__all__ = [
    "FrontRequest",
    "MiB",
    "RegistryFront",
    "Rule",
    "docker_config",
    "fronts_fixture",
    "make_tls",
    "push_multiplatform",
    "random_layers",
    "shutdown_all",
]


FrontFactory = Callable[..., RegistryFront]


def shutdown_all(workers: Sequence[Any]) -> None:
    """Ask every worker process to shut down at once (cold: nothing is running that the
    test still needs), so the fixture's teardown, which stops them one by one, finds
    them already exiting."""
    for worker in workers:
        process = getattr(worker, "process", None)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGQUIT)


@pytest.fixture(name="fronts")
def fronts_fixture() -> Iterator[FrontFactory]:
    """Start :class:`RegistryFront` s (``fronts(upstream_url, **options)``); all are
    stopped after the test."""
    started: list[RegistryFront] = []

    def start(upstream: str, **options: Any) -> RegistryFront:
        front = RegistryFront(upstream, **options).start()
        started.append(front)
        return front

    try:
        yield start
    finally:
        for front in started:
            front.stop()
