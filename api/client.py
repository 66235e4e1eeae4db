"""A store over containerd's content gRPC API: :class:`GrpcStore` implements the store
protocols (Provider, Ingester, IngestManager, Manager) against any server of that API
(``ingestq serve`` or a containerd daemon).

Every failed call is converted back with :func:`errdefs.from_grpc`, so ``except
errdefs.NotFound`` (AlreadyExists, Unavailable, ...) works exactly as against a local
store, with the server's message.

Writers use the ``Content/Write`` stream in lock-step (one reply per request): STAT to
open (errors of the store's ``writer()``: Unavailable for a locked ref, AlreadyExists for
committed content), WRITE per chunk of at most 4 MiB, COMMIT to finish. Closing a writer
half-closes the stream and waits for the server to end it, so the ref's lock is free
when :meth:`GrpcWriter.close` returns.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Self

import grpc
from google.protobuf.empty_pb2 import Empty

from ingestq import errdefs
from ingestq.api import MAX_MESSAGE, namespaces, rpc
from ingestq.api.convert import info_from_pb, info_to_pb, status_from_pb
from ingestq.api.errors import call, from_rpc_error
from ingestq.api.proto.containerd.services.content.v1 import content_pb2
from ingestq.store import filters as filterlang
from ingestq.store.digest import Digest
from ingestq.store.rules import writer_total
from ingestq.store.values import Descriptor, Info, Status

#: The largest WRITE a client sends (well under the 16 MiB message limit).
WRITE_CHUNK = 4 << 20

CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
)


def channel_for(address: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    """A channel to ``address``: ``unix:///path``, ``/path`` (a unix socket) or
    ``host:port`` (TLS when ``credentials`` are given). 16 MiB messages both ways."""
    target = f"unix://{address}" if address.startswith("/") else address
    if credentials is not None:
        return grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)


_CONTENT = content_pb2.DESCRIPTOR.services_by_name["Content"]


class ContentStub:
    """Typed client callables of ``containerd.services.content.v1.Content``."""

    def __init__(self, channel: grpc.Channel) -> None:
        c = content_pb2
        self.Info = rpc.unary_unary(channel, _CONTENT, "Info", c.InfoRequest, c.InfoResponse)
        self.Update = rpc.unary_unary(
            channel, _CONTENT, "Update", c.UpdateRequest, c.UpdateResponse
        )
        self.List = rpc.unary_stream(
            channel, _CONTENT, "List", c.ListContentRequest, c.ListContentResponse
        )
        self.Delete = rpc.unary_unary(channel, _CONTENT, "Delete", c.DeleteContentRequest, Empty)
        self.Read = rpc.unary_stream(
            channel, _CONTENT, "Read", c.ReadContentRequest, c.ReadContentResponse
        )
        self.Status = rpc.unary_unary(
            channel, _CONTENT, "Status", c.StatusRequest, c.StatusResponse
        )
        self.ListStatuses = rpc.unary_unary(
            channel, _CONTENT, "ListStatuses", c.ListStatusesRequest, c.ListStatusesResponse
        )
        self.Write = rpc.stream_stream(
            channel, _CONTENT, "Write", c.WriteContentRequest, c.WriteContentResponse
        )
        self.Abort = rpc.unary_unary(channel, _CONTENT, "Abort", c.AbortRequest, Empty)


class GrpcReaderAt:
    """Random access to one blob through ``Content/Read`` (one ranged stream per call)."""

    def __init__(self, store: GrpcStore, digest: Digest, size: int) -> None:
        self._store = store
        self._digest = digest
        self._size = size
        self._closed = False

    @property
    def size(self) -> int:
        """The blob's size (from Info when the reader was opened)."""
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``; fewer only at the end. OutOfRange for
        an offset before 0 or past the end, FailedPrecondition once closed, NotFound if
        the blob was deleted."""
        if self._closed:
            raise errdefs.FailedPrecondition(f"reader for {self._digest} is closed")
        if offset < 0 or offset > self._size:
            raise errdefs.OutOfRange(f"read past object length {self._size} bytes")
        length = min(length, self._size - offset)
        if length <= 0:
            return b""
        return self._store._read(self._digest, offset, length)

    def close(self) -> None:
        """Mark the reader closed (no server state to release)."""
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_END = object()


class GrpcWriter:
    """One ``Content/Write`` stream (see the module docstring). Not thread-safe."""

    def __init__(
        self, store: GrpcStore, ref: str, expected: Descriptor | None, total: int = 0
    ) -> None:
        known_total = writer_total(ref, expected, total)
        self._store = store
        self.ref = ref
        self._expected = expected.digest if expected is not None else None
        self._requests: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._ended = False
        self._closed = False
        self._responses = iter(
            store._stub.Write(self._request_iterator(), metadata=store._metadata)
        )
        first = content_pb2.WriteContentRequest(
            action=content_pb2.STAT,
            ref=ref,
            total=known_total,
            expected=str(expected.digest) if expected is not None else "",
        )
        try:
            resp = self._round(first)
        except BaseException:
            self.close()
            raise
        self._offset = resp.offset
        self._digest = Digest.parse(resp.digest) if resp.digest else None
        self._total = resp.total

    def _request_iterator(self) -> Iterator[content_pb2.WriteContentRequest]:
        while True:
            item = self._requests.get()
            if item is _END:
                return
            assert isinstance(item, content_pb2.WriteContentRequest)
            yield item

    def _end_requests(self) -> None:
        if not self._ended:
            self._ended = True
            self._requests.put(_END)

    def _round(self, req: content_pb2.WriteContentRequest) -> content_pb2.WriteContentResponse:
        if self._closed:
            raise errdefs.FailedPrecondition(f"writer for {self.ref} is closed")
        self._requests.put(req)
        try:
            resp = next(self._responses)
        except grpc.RpcError as e:
            self._closed = True
            self._end_requests()
            raise from_rpc_error(e) from None
        except StopIteration:
            self._closed = True
            self._end_requests()
            raise errdefs.Unknown(f"write stream for {self.ref} ended without a reply") from None
        if resp.digest:
            self._digest = Digest.parse(resp.digest)
        return resp

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` (sent as WRITEs of at most 4 MiB) and return its length.
        DataLoss if the server accepted fewer bytes; the server's errors otherwise."""
        view = memoryview(data).cast("B")
        for start in range(0, len(view), WRITE_CHUNK):
            chunk = bytes(view[start : start + WRITE_CHUNK])
            resp = self._round(
                content_pb2.WriteContentRequest(
                    action=content_pb2.WRITE, offset=self._offset, data=chunk
                )
            )
            written = resp.offset - self._offset
            self._offset = resp.offset
            if written != len(chunk):
                raise errdefs.DataLoss(f"short write to {self.ref}: {written} of {len(chunk)}")
        return len(view)

    def digest(self) -> Digest:
        """The digest of the bytes written so far, as the server last reported it."""
        if self._digest is None:
            raise errdefs.Unknown(f"server reported no digest for {self.ref}")
        return self._digest

    def status(self) -> Status:
        """The write's Status (a STAT round trip; no holder over the API)."""
        resp = self._round(content_pb2.WriteContentRequest(action=content_pb2.STAT))
        self._total = resp.total
        return status_from_pb(
            content_pb2.Status(
                ref=self.ref,
                offset=resp.offset,
                total=resp.total,
                started_at=resp.started_at,
                updated_at=resp.updated_at,
                expected=str(self._expected) if self._expected else "",
            )
        )

    def truncate(self, size: int) -> None:
        """Restart from zero (a WRITE at offset 0); only ``size == 0`` is supported."""
        if size != 0:
            raise errdefs.InvalidArgument(f"truncate {self.ref}: only size 0 is supported")
        resp = self._round(content_pb2.WriteContentRequest(action=content_pb2.WRITE, offset=0))
        self._offset = resp.offset

    def commit(
        self, size: int = 0, expected: Digest | None = None, labels: Mapping[str, str] | None = None
    ) -> Info:
        """COMMIT with (size, expected, labels) and return the blob's Info. The server's
        errors: FailedPrecondition for a wrong size or digest (the ingest is kept),
        AlreadyExists when the content exists. Always closes the writer."""
        try:
            if expected is not None:
                expected = Digest.parse(expected)
                self._expected = expected
            resp = self._round(
                content_pb2.WriteContentRequest(
                    action=content_pb2.COMMIT,
                    offset=self._offset,
                    total=size,
                    expected=str(expected) if expected is not None else "",
                    labels=dict(labels or {}),
                )
            )
            if size and resp.offset != size:
                raise errdefs.FailedPrecondition(f"unexpected size: {resp.offset} != {size}")
            digest = Digest.parse(resp.digest)
            if expected is not None and digest != expected:
                raise errdefs.FailedPrecondition(f"unexpected digest: {digest} != {expected}")
        finally:
            self.close()
        return self._store.info(digest)

    def close(self) -> None:
        """Half-close the stream and wait until the server ends it (the ref lock is then
        released; partial data stays for a resume). Closing twice is fine."""
        self._closed = True
        if self._ended:
            return
        self._end_requests()
        try:
            for _ in self._responses:
                pass
        except grpc.RpcError:
            pass  # the stream's end status; nothing is pending on it

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_ended", True):
            self._end_requests()


class GrpcStore:
    """The store protocols over containerd's content API.

    Args:
        target: a ``grpc.Channel`` (kept open by :meth:`close`) or an address for
            :func:`channel_for` (then owned and closed by :meth:`close`).
        namespace: sent as ``containerd-namespace`` on every call (InvalidArgument if it
            is not a valid containerd identifier).
        lease: sent as ``containerd-lease`` when set.
        timeout: seconds for each unary call (None: no deadline).
    """

    def __init__(
        self,
        target: grpc.Channel | str,
        namespace: str = "default",
        *,
        lease: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self._owned = isinstance(target, str)
        self._channel = channel_for(target) if isinstance(target, str) else target
        self._stub = ContentStub(self._channel)
        self._metadata = namespaces.metadata(namespace, lease)
        self._timeout = timeout
        self.namespace = namespace

    @property
    def channel(self) -> grpc.Channel:
        """The underlying channel."""
        return self._channel

    def close(self) -> None:
        """Close the channel if this store opened it."""
        if self._owned:
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # Provider ---------------------------------------------------------------------------
    def reader_at(self, desc: Descriptor | Digest | str) -> GrpcReaderAt:
        """A reader for the blob; NotFound if it is not committed."""
        digest = desc.digest if isinstance(desc, Descriptor) else Digest.parse(desc)
        return GrpcReaderAt(self, digest, self.info(digest).size)

    def _read(self, digest: Digest, offset: int, length: int) -> bytes:
        req = content_pb2.ReadContentRequest(digest=str(digest), offset=offset, size=length)

        def run() -> bytes:
            parts = [r.data for r in self._stub.Read(req, metadata=self._metadata)]
            return b"".join(parts)[:length]

        return call(run)

    # Ingester ---------------------------------------------------------------------------
    def writer(self, ref: str, expected: Descriptor | None = None, *, total: int = 0) -> GrpcWriter:
        """Open a Write stream on ``ref`` (see :meth:`store.protocols.Ingester.writer`):
        Unavailable when the ref is locked, AlreadyExists when ``expected`` exists."""
        return GrpcWriter(self, ref, expected, total)

    # IngestManager ----------------------------------------------------------------------
    def status(self, ref: str) -> Status:
        """The ingest's Status; NotFound ``reference <ref>`` if there is none."""
        resp = call(
            lambda: self._stub.Status(
                content_pb2.StatusRequest(ref=ref),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        )
        return status_from_pb(resp.status)

    def list_statuses(self, *filters: str) -> list[Status]:
        """Every ingest matching any filter (field ``ref``)."""
        resp = call(
            lambda: self._stub.ListStatuses(
                content_pb2.ListStatusesRequest(filters=list(filters)),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        )
        return [status_from_pb(s) for s in resp.statuses]

    def abort(self, ref: str) -> None:
        """Remove the ingest; NotFound if there is none, Unavailable if it is locked."""
        call(
            lambda: self._stub.Abort(
                content_pb2.AbortRequest(ref=ref),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        )

    # Manager ----------------------------------------------------------------------------
    def info(self, digest: Digest | str) -> Info:
        """The blob's Info; NotFound if it is not committed."""
        resp = call(
            lambda: self._stub.Info(
                content_pb2.InfoRequest(digest=str(digest)),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        )
        return info_from_pb(resp.info)

    def exists(self, digest: Digest | str) -> bool:
        """Whether the blob is committed."""
        try:
            self.info(digest)
        except errdefs.NotFound:
            return False
        return True

    def update(self, info: Info, *fieldpaths: str) -> Info:
        """Change labels along ``fieldpaths`` (see
        :meth:`store.protocols.Manager.update`); returns the new Info."""
        req = content_pb2.UpdateRequest(info=info_to_pb(info))
        req.update_mask.paths.extend(fieldpaths)
        resp = call(lambda: self._stub.Update(req, metadata=self._metadata, timeout=self._timeout))
        return info_from_pb(resp.info)

    def walk(self, *filters: str) -> Iterator[Info]:
        """Every blob matching any filter. The filters are parsed here first, so a
        syntax error is InvalidArgument before iteration starts."""
        filterlang.parse(*filters)
        req = content_pb2.ListContentRequest(filters=list(filters))
        return self._walk(req)

    def _walk(self, req: content_pb2.ListContentRequest) -> Iterator[Info]:
        responses = self._stub.List(req, metadata=self._metadata)
        cancel: Callable[[], object] = responses.cancel
        try:
            for resp in responses:
                for msg in resp.info:
                    yield info_from_pb(msg)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            cancel()

    def delete(self, digest: Digest | str) -> None:
        """Remove the blob; NotFound if it is not committed."""
        call(
            lambda: self._stub.Delete(
                content_pb2.DeleteContentRequest(digest=str(digest)),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        )
