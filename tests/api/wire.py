"""Raw gRPC access to the server for wire-level tests: typed callables of every
service, and :class:`WriteStream`, a lock-step driver of ``Content/Write`` that exposes
each reply and the stream's final status."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator

import grpc
from google.protobuf.empty_pb2 import Empty

from ingestq.api import rpc
from ingestq.api.proto.containerd.services.content.v1 import content_pb2 as c
from ingestq.api.proto.containerd.services.images.v1 import images_pb2 as im
from ingestq.api.proto.containerd.services.introspection.v1 import introspection_pb2 as intro
from ingestq.api.proto.containerd.services.leases.v1 import leases_pb2 as le

CONTENT = c.DESCRIPTOR.services_by_name["Content"]
LEASES = le.DESCRIPTOR.services_by_name["Leases"]
IMAGES = im.DESCRIPTOR.services_by_name["Images"]
INTROSPECTION = intro.DESCRIPTOR.services_by_name["Introspection"]

NS = (("containerd-namespace", "default"),)


def md(namespace: str | None = "default", lease: str | None = None) -> tuple[tuple[str, str], ...]:
    """Call metadata: the namespace (None: none at all) and an optional lease."""
    out: tuple[tuple[str, str], ...] = ()
    if namespace is not None:
        out += (("containerd-namespace", namespace),)
    if lease is not None:
        out += (("containerd-lease", lease),)
    return out


class Content:
    """Typed callables of the content service."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Info = rpc.unary_unary(channel, CONTENT, "Info", c.InfoRequest, c.InfoResponse)
        self.Update = rpc.unary_unary(channel, CONTENT, "Update", c.UpdateRequest, c.UpdateResponse)
        self.List = rpc.unary_stream(
            channel, CONTENT, "List", c.ListContentRequest, c.ListContentResponse
        )
        self.Delete = rpc.unary_unary(channel, CONTENT, "Delete", c.DeleteContentRequest, Empty)
        self.Read = rpc.unary_stream(
            channel, CONTENT, "Read", c.ReadContentRequest, c.ReadContentResponse
        )
        self.Status = rpc.unary_unary(channel, CONTENT, "Status", c.StatusRequest, c.StatusResponse)
        self.ListStatuses = rpc.unary_unary(
            channel, CONTENT, "ListStatuses", c.ListStatusesRequest, c.ListStatusesResponse
        )
        self.Write = rpc.stream_stream(
            channel, CONTENT, "Write", c.WriteContentRequest, c.WriteContentResponse
        )
        self.Abort = rpc.unary_unary(channel, CONTENT, "Abort", c.AbortRequest, Empty)


class Leases:
    """Typed callables of the leases service."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Create = rpc.unary_unary(
            channel, LEASES, "Create", le.CreateRequest, le.CreateResponse
        )
        self.Delete = rpc.unary_unary(channel, LEASES, "Delete", le.DeleteRequest, Empty)
        self.List = rpc.unary_unary(channel, LEASES, "List", le.ListRequest, le.ListResponse)
        self.AddResource = rpc.unary_unary(
            channel, LEASES, "AddResource", le.AddResourceRequest, Empty
        )
        self.DeleteResource = rpc.unary_unary(
            channel, LEASES, "DeleteResource", le.DeleteResourceRequest, Empty
        )
        self.ListResources = rpc.unary_unary(
            channel, LEASES, "ListResources", le.ListResourcesRequest, le.ListResourcesResponse
        )


class Images:
    """Typed callables of the images service."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Get = rpc.unary_unary(channel, IMAGES, "Get", im.GetImageRequest, im.GetImageResponse)
        self.List = rpc.unary_unary(
            channel, IMAGES, "List", im.ListImagesRequest, im.ListImagesResponse
        )
        self.Create = rpc.unary_unary(
            channel, IMAGES, "Create", im.CreateImageRequest, im.CreateImageResponse
        )
        self.Update = rpc.unary_unary(
            channel, IMAGES, "Update", im.UpdateImageRequest, im.UpdateImageResponse
        )
        self.Delete = rpc.unary_unary(channel, IMAGES, "Delete", im.DeleteImageRequest, Empty)


def status_of(err: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """The status code and message of a failed call."""
    return err.code(), err.details() or ""


_END = object()


class WriteStream:
    """One ``Content/Write`` stream driven in lock-step by the test.

    :meth:`send` sends one request and returns its reply (or raises the stream's
    ``grpc.RpcError``); :meth:`half_close` ends the request side and returns the final
    status code once the server ends the stream; :meth:`wait_end` waits, sending nothing,
    until the server ends it; :meth:`cancel` drops the call as a dying client would.
    """

    def __init__(self, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = NS):
        self._requests: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._call = Content(channel).Write(self._iter(), metadata=metadata)
        self._responses = iter(self._call)
        self._ended = False

    def _iter(self) -> Iterator[c.WriteContentRequest]:
        while True:
            item = self._requests.get()
            if item is _END:
                return
            assert isinstance(item, c.WriteContentRequest)
            yield item

    def send(self, req: c.WriteContentRequest) -> c.WriteContentResponse:
        """Send ``req`` and wait for its one reply."""
        self._requests.put(req)
        try:
            return next(self._responses)
        except grpc.RpcError:
            self._end()
            raise

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._requests.put(_END)

    def half_close(self) -> grpc.StatusCode:
        """Half-close; return the status code the server ends the stream with (after
        checking it sends no further reply)."""
        self._end()
        extra = []
        try:
            extra = list(self._responses)
        except grpc.RpcError as e:
            return e.code()
        assert extra == [], "a reply without a request"
        return self._call.code()

    def wait_end(self) -> grpc.RpcError:
        """Send nothing more (no half-close) and return the error the server ends the
        stream with (AssertionError if it ends OK or sends a reply)."""
        try:
            extra = next(self._responses, None)
        except grpc.RpcError as e:
            self._end()
            return e
        raise AssertionError(f"the stream ended OK or replied without a request: {extra}")

    def cancel(self) -> None:
        """Drop the call."""
        cancel: Callable[[], object] = self._call.cancel
        cancel()
        self._end()


def stat(ref: str = "", total: int = 0, expected: str = "") -> c.WriteContentRequest:
    """A STAT request."""
    return c.WriteContentRequest(action=c.STAT, ref=ref, total=total, expected=expected)


def write(offset: int, data: bytes, **kw: object) -> c.WriteContentRequest:
    """A WRITE request."""
    return c.WriteContentRequest(action=c.WRITE, offset=offset, data=data, **kw)  # type: ignore[arg-type]


def commit(
    offset: int,
    total: int = 0,
    expected: str = "",
    data: bytes = b"",
    labels: dict[str, str] | None = None,
) -> c.WriteContentRequest:
    """A COMMIT request."""
    return c.WriteContentRequest(
        action=c.COMMIT,
        offset=offset,
        total=total,
        expected=expected,
        data=data,
        labels=labels or {},
    )
