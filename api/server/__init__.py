"""The gRPC server: containerd's content, leases, images, introspection, version and
namespaces services over one ingestq store.

:class:`ApiServer` binds unix sockets (mode 0660) and, only when asked, TCP addresses
(with TLS when given a certificate and key). Messages up to 16 MiB are accepted and sent
both ways, as containerd's clients expect.

Threads are bounded so that no client can starve the others: ``max_workers`` threads
serve at most ``max_workers`` calls at once (grpc answers any call beyond that
ResourceExhausted at once instead of queueing it), at most ``max_streams`` of them Write,
Read or List streams (the rest stay free for unary calls), and a stream idle for
``stream_idle_timeout`` seconds ends (see :mod:`ingestq.api.server.limits`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from ingestq import errdefs
from ingestq.api import MAX_MESSAGE
from ingestq.api.proto.containerd.services.content.v1 import content_pb2
from ingestq.api.proto.containerd.services.images.v1 import images_pb2
from ingestq.api.proto.containerd.services.introspection.v1 import introspection_pb2
from ingestq.api.proto.containerd.services.leases.v1 import leases_pb2
from ingestq.api.proto.containerd.services.namespaces.v1 import namespace_pb2
from ingestq.api.proto.containerd.services.version.v1 import version_pb2
from ingestq.api.rpc import add_service
from ingestq.api.server.content import ContentService
from ingestq.api.server.images import ImagesService, ImageStore
from ingestq.api.server.introspection import IntrospectionService, NamespacesService, VersionService
from ingestq.api.server.leases import LeasesService
from ingestq.api.server.limits import StreamGuard
from ingestq.store.images import image_index_of
from ingestq.store.leases import leases_of
from ingestq.store.protocols import Store

SOCKET_MODE = 0o660
GRPC_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.so_reuseport", 0),
)

#: How long a stream may wait for its client (a request, or taking a response) by default.
STREAM_IDLE_TIMEOUT = 60.0
_CONTENT = content_pb2.DESCRIPTOR.services_by_name["Content"]
#: The client-paced streams that count against ``max_streams``: every streaming call of
#: the services served (a List whose client stops reading holds its thread as a Read's).
BUDGETED_STREAMS = tuple(f"/{_CONTENT.full_name}/{name}" for name in ("Write", "Read", "List"))

__all__ = [
    "MAX_MESSAGE",
    "STREAM_IDLE_TIMEOUT",
    "ApiServer",
    "Listen",
    "default_max_streams",
    "parse_address",
]


def default_max_streams(max_workers: int) -> int:
    """The stream budget for ``max_workers`` threads: all but a quarter of them (at
    least one) kept for unary calls."""
    return max_workers - max(1, max_workers // 4)


@dataclass(frozen=True)
class Listen:
    """Where to listen: a unix socket path, or a TCP ``host:port`` (TLS when ``cert``
    and ``key`` are PEM files)."""

    unix: Path | None = None
    tcp: str | None = None
    cert: Path | None = None
    key: Path | None = None


def parse_address(address: str, cert: Path | None = None, key: Path | None = None) -> Listen:
    """``unix:///path.sock`` or ``/path.sock`` -> a unix socket; ``tcp://host:port`` or
    ``host:port`` -> TCP. TLS needs both ``cert`` and ``key`` and applies to TCP only
    (unix sockets are protected by their file mode). InvalidArgument otherwise."""
    if (cert is None) != (key is None):
        raise errdefs.InvalidArgument("TLS needs both a certificate and a key")
    if address.startswith("unix://"):
        path = address[len("unix://") :]
    elif address.startswith("/"):
        path = address
    else:
        hostport = address[len("tcp://") :] if address.startswith("tcp://") else address
        host, sep, port = hostport.rpartition(":")
        if not sep or not host or not (port.isascii() and port.isdigit()):
            raise errdefs.InvalidArgument(f"address {address!r} is not unix://PATH or HOST:PORT")
        return Listen(tcp=hostport, cert=cert, key=key)
    if not path:
        raise errdefs.InvalidArgument(f"address {address!r} has no socket path")
    return Listen(unix=Path(path))


def _claim_socket_path(path: Path) -> None:
    """Remove a stale socket file at ``path``; Unavailable if a server answers there,
    AlreadyExists if it is not a socket."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise errdefs.AlreadyExists(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens: a leftover of a dead server
            return
    raise errdefs.Unavailable(f"another server listens on {path}")


class ApiServer:
    """containerd's API over ``store``, with the store's image records and leases (its
    own when it keeps them, as the S3 store does in its bucket; else under ``root``).

    ``max_workers`` (at least 2) threads serve at most that many calls at once; beyond
    it calls are answered ResourceExhausted. ``max_streams`` (default
    :func:`default_max_streams`, below ``max_workers``) bounds open Write, Read and List
    streams; one more is ResourceExhausted. A stream waiting for its client longer than
    ``stream_idle_timeout`` seconds ends (a Write with DeadlineExceeded, keeping its
    partial data). ``lock_wait`` is how long a Write stream retries a locked ref before
    Unavailable. InvalidArgument for bounds that do not fit."""

    def __init__(
        self,
        store: Store,
        root: str | os.PathLike[str],
        *,
        max_workers: int = 64,
        max_streams: int | None = None,
        stream_idle_timeout: float = STREAM_IDLE_TIMEOUT,
        lock_wait: float = 1.0,
    ) -> None:
        if max_workers < 2:
            raise errdefs.InvalidArgument(f"max workers must be at least 2, not {max_workers}")
        streams = default_max_streams(max_workers) if max_streams is None else max_streams
        if not 1 <= streams < max_workers:
            raise errdefs.InvalidArgument(
                f"max streams must be from 1 to max workers - 1 ({max_workers - 1}), "
                f"not {streams}: unary calls need a thread of their own"
            )
        self.root = Path(root)
        self.leases = leases_of(store, self.root)
        self.images = ImageStore(image_index_of(store, self.root))
        self.guard = StreamGuard(
            max_streams=streams, idle_timeout=stream_idle_timeout, budgeted=BUDGETED_STREAMS
        )
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="ingestq-api"),
            options=GRPC_OPTIONS,
            interceptors=[self.guard],
            maximum_concurrent_rpcs=max_workers,
        )
        services: tuple[tuple[ServiceDescriptor, object], ...] = (
            (
                _CONTENT,
                ContentService(store, self.leases, lock_wait=lock_wait),
            ),
            (leases_pb2.DESCRIPTOR.services_by_name["Leases"], LeasesService(self.leases)),
            (images_pb2.DESCRIPTOR.services_by_name["Images"], ImagesService(self.images)),
            (
                introspection_pb2.DESCRIPTOR.services_by_name["Introspection"],
                IntrospectionService(self.root),
            ),
            (version_pb2.DESCRIPTOR.services_by_name["Version"], VersionService()),
            (
                namespace_pb2.DESCRIPTOR.services_by_name["Namespaces"],
                NamespacesService(self.leases),
            ),
        )
        for service, servicer in services:
            add_service(self._server, service, servicer)
        self._sockets: list[Path] = []
        self.addresses: list[str] = []

    def listen(self, where: Listen) -> str:
        """Bind ``where`` (before :meth:`start`) and return the client address: the
        ``unix://`` path, or ``host:port`` with the port actually bound (``:0`` picks one).
        A unix socket is created with mode 0660; a stale one is replaced."""
        if where.unix is not None:
            path = where.unix.absolute()
            _claim_socket_path(path)
            old = os.umask(0o117)
            try:
                self._server.add_insecure_port(f"unix://{path}")
            finally:
                os.umask(old)
            os.chmod(path, SOCKET_MODE)
            self._sockets.append(path)
            address = f"unix://{path}"
        else:
            assert where.tcp is not None
            host = where.tcp.rpartition(":")[0]
            if where.cert is not None and where.key is not None:
                creds = grpc.ssl_server_credentials(
                    [(where.key.read_bytes(), where.cert.read_bytes())]
                )
                port = self._server.add_secure_port(where.tcp, creds)
            else:
                port = self._server.add_insecure_port(where.tcp)
            if port == 0:
                raise errdefs.Unavailable(f"cannot listen on {where.tcp}")
            address = f"{host}:{port}"
        self.addresses.append(address)
        return address

    def start(self) -> None:
        """Start serving."""
        self._server.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (True) or ``timeout`` passes (False)."""
        return bool(self._server.wait_for_termination(timeout))

    def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting calls, let running ones finish for ``grace`` seconds, cancel
        the rest (their Write streams keep partial data), and remove the sockets."""
        self._server.stop(grace).wait()
        self.guard.close()
        for path in self._sockets:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
