"""The one httpx transport of :mod:`ingestq.fetch`: it reads the socket in large pieces.

httpcore's HTTP/1.1 connection asks the socket for at most 64 KiB per read and runs
every piece through h11's pure-Python receive buffer. For multi-GiB layers on a fast
network that per-read overhead, not the network, bounds throughput (measured on
loopback: ~250 MiB/s at 64 KiB, ~450 MiB/s at 1 MiB per read), and 64 KiB pieces are
also below the store's threshold for hashing in parallel with the write.

:func:`transport` builds the ordinary :class:`httpx.HTTPTransport` but gives its
connection pool a network backend (httpcore's public ``network_backend`` hook) whose
streams read up to :data:`READ_SIZE` bytes at a time. Nothing else changes: TLS,
keep-alive, limits and timeouts are httpx's and httpcore's own. A read still returns as
soon as *some* bytes arrived, so progress and cancellation are not delayed.

A response body can also skip h11 (:class:`RawBody`): h11 copies every byte of a body
four times in Python (into its receive buffer, two slices, ``bytes()`` in httpcore),
~13% of a worker's CPU on a pull. The stream hands h11 a response's header block alone
and keeps the bytes that came with it; :class:`ingestq.fetch.httpio.BodyStream` may then
claim the body of that response (a plain ``Content-Length`` body, right after its
headers) and read it straight from the socket, exactly ``Content-Length`` bytes. h11
never sees that body, so httpcore closes the connection when the response is closed
instead of reusing it: worth it for large bodies only. A body nobody claims reaches h11
as if it had arrived in two reads.
"""

from __future__ import annotations

import re
import ssl
import typing

import httpcore
import httpx

#: Bytes asked of the socket per read.
READ_SIZE = 1 << 20


#: The end of a header block, as h11 finds it (a bare LF is accepted as a line end).
_HEADER_END = re.compile(b"\n\r?\n")
#: The start of an informational (1xx) status line: another header block follows.
_INFORMATIONAL = re.compile(rb"HTTP/\d\.\d 1")


class RawBody:
    """A connection whose next response body may be read past h11 (module docstring).
    :meth:`claim` it right after the response's headers arrived; then read the body
    with :meth:`read_body`, at most the bytes left of its ``Content-Length``."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner
        # Bytes read with a header block, after it: handed out first.
        self._held = b""
        # A request went out and its response's header block is still being read:
        # its first bytes (for the 1xx check) and the last 3 (a split terminator).
        self._in_head = False
        self._head_start = b""
        self._head_tail = b""
        # The header block just went to h11 and nothing was read since.
        self._body_ready = False

    def claim(self) -> bool:
        """Take the body of the response whose headers were just read: True at most
        once per response, and only when h11 has read nothing after them."""
        ready, self._body_ready = self._body_ready, False
        return ready

    def read_body(self, max_bytes: int, timeout: float | None) -> bytes:
        """Up to ``max_bytes`` bytes of a claimed body (``b""`` when the peer closed);
        raises httpcore's ReadTimeout / ReadError as the connection's reads do."""
        if self._held:
            out, self._held = self._held[:max_bytes], self._held[max_bytes:]
            return out
        return self._inner.read(max_bytes, timeout)

    def _split_head(self, data: bytes) -> bytes:
        """What of ``data`` goes to h11 while a header block is read: up to the block's
        end (the rest is held for the body)."""
        if len(self._head_start) < 16:
            self._head_start += data[: 16 - len(self._head_start)]
        search = self._head_tail + data
        found = _HEADER_END.search(search)
        if found is None:
            self._head_tail = search[-3:]
            return data
        self._in_head = False
        if _INFORMATIONAL.match(self._head_start):
            return data  # a 1xx and its response: all to h11
        end = found.end() - len(self._head_tail)
        self._held = data[end:]
        self._body_ready = True
        return data[:end]


class _LargeReadStream(RawBody, httpcore.NetworkStream):
    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._body_ready = False
        if self._held:
            out, self._held = self._held, b""
            return out
        data = self._inner.read(max(max_bytes, READ_SIZE), timeout)
        if self._in_head and data:
            return self._split_head(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)
        if not self._in_head and buffer:
            # A new request: its response's header block comes next.
            self._in_head, self._head_start, self._head_tail = True, b"", b""
            self._body_ready = False

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _LargeReadStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _LargeReadBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _LargeReadStream(
            self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _LargeReadStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def transport(verify: ssl.SSLContext | bool, limits: httpx.Limits) -> httpx.HTTPTransport:
    """An HTTP/1.1 transport with ``verify`` and ``limits`` whose sockets are read in
    :data:`READ_SIZE` pieces. It connects directly: an httpx client given a transport
    ignores the environment's proxies, so :func:`ingestq.fetch.httpio.new_client` uses
    it only when none is set."""
    context = httpx.create_ssl_context(verify=verify)  # once: a default one parses CAs
    out = httpx.HTTPTransport(verify=context, limits=limits)
    out._pool = httpcore.ConnectionPool(
        ssl_context=context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_LargeReadBackend(),
    )
    return out


__all__ = ["READ_SIZE", "RawBody", "transport"]
