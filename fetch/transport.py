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
"""

from __future__ import annotations

import ssl
import typing

import httpcore
import httpx

#: Bytes asked of the socket per read.
READ_SIZE = 1 << 20


class _LargeReadStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max(max_bytes, READ_SIZE), timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

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
    out = httpx.HTTPTransport(verify=verify, limits=limits)
    out._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(verify=verify),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_LargeReadBackend(),
    )
    return out


__all__ = ["READ_SIZE", "transport"]
