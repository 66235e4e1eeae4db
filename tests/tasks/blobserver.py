"""A real HTTP server on 127.0.0.1 that serves blobs and misbehaves on purpose.

Every blob is registered under a path with a :class:`Behaviour`. Unless told to
misbehave it answers ranges as RFC 9110 says (``bytes=<start>-`` at or past the end is
416 with ``Content-Range: bytes */<size>``). The server logs every
request (path, Range, If-Range, status, bytes sent), so tests can assert "the bytes
were served once" or "the resume asked for ``bytes=<offset>-``". A gate makes
"mid-ingest" deterministic: the body stops at ``gate_offset`` and the server sets
``gate_reached`` until the test sets ``gate``. ``trickle`` sends the body slowly
(``(bytes, seconds)``: that many bytes, then a pause), a slow-loris source; a range
request to a path with ``unsatisfiable_total`` is answered ``416`` with
``Content-Range: bytes */<unsatisfiable_total>`` whatever the blob's size.

Validators: every blob with data has an ``ETag`` (derived from the data unless given;
``etag=""`` sends none) and, when set, a ``Last-Modified``; a GET whose
``If-None-Match`` matches the ETag, or (without If-None-Match) whose
``If-Modified-Since`` is not older than Last-Modified, is answered ``304 Not Modified``
with no body. :meth:`BlobServer.count` counts the requests of a path by status,
:attr:`BlobServer.connections` the connections accepted.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    """How one path answers."""

    data: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    ignore_range: bool = False
    wrong_range: bool = False
    truncate_at: int | None = None
    extra_bytes: bytes = b""
    announce_length: int | None = None
    stall_at: int | None = None
    redirect_to: str | None = None
    gate_offset: int | None = None
    gate_requests: int = 1
    gate: threading.Event = field(default_factory=threading.Event)
    gate_reached: threading.Event = field(default_factory=threading.Event)
    status_sequence: list[int] = field(default_factory=list)
    chunk: int = 1 << 16
    trickle: tuple[int, float] | None = None
    unsatisfiable_total: int | None = None

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Logged:
    path: str
    range: str | None
    if_range: str | None
    status: int
    sent: int
    at: float = 0.0
    if_none_match: str | None = None
    if_modified_since: str | None = None


_RANGE = re.compile(r"^bytes=(\d+)-$")


class _QuietServer(ThreadingHTTPServer):
    """A client that drops its connection on purpose (a refused response) is no error."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class BlobServer:
    """Start with :meth:`start`; stop with :meth:`stop`."""

    def __init__(self) -> None:
        self.paths: dict[str, Behaviour] = {}
        self.log: list[Logged] = []
        self._mutex = threading.Lock()
        self._requests: dict[str, int] = {}
        self._stop_stall = threading.Event()
        #: Connections accepted so far.
        self.connections = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def setup(self) -> None:
                super().setup()
                with server._mutex:
                    server.connections += 1

            def do_GET(self) -> None:
                server._serve(self)

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> BlobServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop_stall.set()
        for b in self.paths.values():
            b.gate.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def add(self, path: str, behaviour: Behaviour) -> str:
        if behaviour.etag is None and behaviour.data:
            behaviour.etag = '"' + hashlib.sha256(behaviour.data).hexdigest()[:16] + '"'
        self.paths[path] = behaviour
        return self.url + path

    def requests_for(self, path: str) -> list[Logged]:
        with self._mutex:
            return [r for r in self.log if r.path == path]

    def count(self, path: str, status: int | None = None) -> int:
        """How many requests of ``path`` were answered (with ``status``, if given)."""
        return sum(1 for r in self.requests_for(path) if status is None or r.status == status)

    def bytes_served(self, path: str) -> int:
        return sum(r.sent for r in self.requests_for(path))

    def _record(self, entry: Logged) -> None:
        with self._mutex:
            self.log.append(entry)

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        at = time.monotonic()
        path = h.path
        rng, if_range = h.headers.get("Range"), h.headers.get("If-Range")
        b = self.paths.get(path)
        if b is None:
            self._simple(h, 404, path, rng, if_range)
            return
        with self._mutex:
            n = self._requests[path] = self._requests.get(path, 0) + 1
        if b.redirect_to is not None:
            h.send_response(302)
            h.send_header("Location", b.redirect_to)
            h.send_header("Content-Length", "0")
            h.end_headers()
            self._record(Logged(path, rng, if_range, 302, 0, at))
            return
        status = b.status_sequence.pop(0) if b.status_sequence else b.status
        inm, ims = h.headers.get("If-None-Match"), h.headers.get("If-Modified-Since")
        if status == 200 and _not_modified(b, inm, ims):
            h.send_response(304)
            if b.etag:
                h.send_header("ETag", b.etag)
            if b.last_modified:
                h.send_header("Last-Modified", b.last_modified)
            h.end_headers()
            self._record(Logged(path, rng, if_range, 304, 0, at, inm, ims))
            return
        if status != 200:
            self._simple(h, status, path, rng, if_range, b.headers, at)
            return
        data = b.data
        start = 0
        m = _RANGE.match(rng or "")
        partial = False
        if m and not b.ignore_range and (if_range is None or if_range == b.etag):
            start = int(m.group(1))
            partial = True
        if partial and b.unsatisfiable_total is not None:
            unsatisfiable = {**b.headers, "Content-Range": f"bytes */{b.unsatisfiable_total}"}
            self._simple(h, 416, path, rng, if_range, unsatisfiable, at)
            return
        if partial and start >= len(data):
            unsatisfiable = {**b.headers, "Content-Range": f"bytes */{len(data)}"}
            self._simple(h, 416, path, rng, if_range, unsatisfiable, at)
            return
        body = data[start:] + b.extra_bytes
        h.send_response(206 if partial else 200)
        if partial:
            first = start + 1 if b.wrong_range else start
            h.send_header("Content-Range", f"bytes {first}-{len(data) - 1}/{len(data)}")
        length = b.announce_length if b.announce_length is not None else len(body)
        if b.truncate_at is not None:
            body = body[: b.truncate_at]
        h.send_header("Content-Length", str(length))
        if b.etag:
            h.send_header("ETag", b.etag)
        if b.last_modified:
            h.send_header("Last-Modified", b.last_modified)
        for k, v in b.headers.items():
            h.send_header(k, v)
        h.end_headers()
        sent = 0
        try:
            pos = 0
            while pos < len(body):
                if (
                    b.gate_offset is not None
                    and n <= b.gate_requests
                    and start + pos >= b.gate_offset
                    and not b.gate.is_set()
                ):
                    b.gate_reached.set()
                    b.gate.wait()
                if b.stall_at is not None and start + pos >= b.stall_at:
                    self._stop_stall.wait(30)
                    break
                if b.trickle is not None and pos > 0 and self._stop_stall.wait(b.trickle[1]):
                    break
                step = b.trickle[0] if b.trickle is not None else b.chunk
                end = min(len(body), pos + step)
                if (
                    b.gate_offset is not None
                    and n <= b.gate_requests
                    and start + pos < b.gate_offset
                ):
                    end = min(end, b.gate_offset - start)
                h.wfile.write(body[pos:end])
                if b.trickle is not None:
                    h.wfile.flush()
                sent += end - pos
                pos = end
            h.wfile.flush()
        except (TimeoutError, BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            status = 206 if partial else 200
            self._record(Logged(path, rng, if_range, status, sent, at, inm, ims))
        if b.truncate_at is not None or b.stall_at is not None or b.trickle is not None:
            h.close_connection = True

    def _simple(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        path: str,
        rng: str | None,
        if_range: str | None,
        headers: dict[str, str] | None = None,
        at: float = 0.0,
    ) -> None:
        body = f"status {status}\n".encode()
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
        self._record(Logged(path, rng, if_range, status, 0, at))


def _not_modified(b: Behaviour, if_none_match: str | None, if_modified_since: str | None) -> bool:
    """RFC 9110: If-None-Match decides when present, else If-Modified-Since."""
    if if_none_match is not None:
        return bool(b.etag) and if_none_match.strip() in (b.etag, "*")
    if if_modified_since is None or not b.last_modified:
        return False
    try:
        since = email.utils.parsedate_to_datetime(if_modified_since)
        modified = email.utils.parsedate_to_datetime(b.last_modified)
    except (TypeError, ValueError):
        return False
    return modified <= since
