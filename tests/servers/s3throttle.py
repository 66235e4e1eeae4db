"""A throttling S3 front on 127.0.0.1: forwards every request to a real S3 endpoint
(SeaweedFS in the tests), except that it answers the requests its ``throttle`` rule picks
(the first ``times`` of them, or all until :meth:`ThrottlingS3.stop`) with S3's own
``503 SlowDown``, as a bucket over its request rate does. The requests are forwarded
with their headers unchanged (their SigV4 signature covers the ``Host`` the client
sent, this front's)."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

#: Headers that belong to one hop and are not forwarded.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}
)

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class ThrottlingS3:
    """The front (a context manager): ``url`` to give clients, ``throttled`` counts the
    requests answered SlowDown so far."""

    def __init__(
        self, upstream: str, throttle: Callable[[str, str], bool], times: int | None = None
    ) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._throttle = throttle
        self._left = times
        self._mutex = threading.Lock()
        self.throttled = 0
        #: ``(method, path)`` of every request seen, in order.
        self.seen: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _take(self, method: str, path: str) -> bool:
        """Whether this request is answered SlowDown (and count it)."""
        with self._mutex:
            self.seen.append((method, path))
            if self._left is not None and self._left <= 0:
                return False
            if not self._throttle(method, path):
                return False
            if self._left is not None:
                self._left -= 1
            self.throttled += 1
            return True

    def stop(self) -> None:
        """Forward every request from now on."""
        with self._mutex:
            self._left = 0

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if front._take(self.command, self.path):
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = http.client.HTTPConnection(*front._upstream, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                finally:
                    upstream.close()
                head = self.command == "HEAD"  # its Content-Length is the object's
                self.send_response(answer.status, answer.reason)
                for k, v in answer.getheaders():
                    if k.lower() not in HOP_BY_HOP and (head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


__all__ = ["SLOW_DOWN", "ThrottlingS3"]
