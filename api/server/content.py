"""``containerd.services.content.v1.Content`` over an ingestq store.

Every RPC requires the ``containerd-namespace`` metadata (see :mod:`api.namespaces` for
how namespaces map onto the one store) and reports failures through
:mod:`api.errors` (errdefs kind -> gRPC code, full message). Store errors pass through
unchanged, so clients see the store's own messages (``content sha256:...: not found``).

* Info / Update / Delete: one blob; Update honours the field mask (``labels``,
  ``labels.<key>``; no mask replaces all labels).
* List: the blobs matching the filters, in batches of at most 100 Infos per message;
  an empty result sends no message at all.
* Read: a negative offset reads from 0; an offset past the end is OutOfRange ``read past
  object length <n> bytes``; size <= 0 (or past the end) reads to the end; data comes in
  chunks of at most 1 MiB, each message carrying its absolute offset.
* Status / ListStatuses / Abort: ingests by client ref (``[""]`` lists every ingest).
* Write: the lock-step stream of :mod:`api.server.write`.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from google.protobuf.empty_pb2 import Empty

from ingestq import errdefs
from ingestq.api import namespaces
from ingestq.api.convert import info_from_pb, info_to_pb, status_to_pb
from ingestq.api.errors import stream, unary
from ingestq.api.proto.containerd.services.content.v1 import content_pb2
from ingestq.api.server.write import WriteSession, open_writer, serve_stream
from ingestq.store.digest import Digest
from ingestq.store.leases import Leases
from ingestq.store.protocols import Store
from ingestq.store.rules import validate_labels, validate_ref
from ingestq.store.values import Descriptor

LIST_BATCH = 100
#: A List message is sent once its infos reach this many bytes (each object's labels
#: may take up to 256 KiB; gRPC's default message limit is 4 MiB for a client).
LIST_BATCH_BYTES = 1 << 20
READ_CHUNK = 1 << 20


class ContentService:
    """The content service. ``lock_wait``: how long a Write stream retries a locked ref
    before answering Unavailable (containerd's backend retries for about 1 s)."""

    def __init__(self, store: Store, leases: Leases, *, lock_wait: float = 1.0) -> None:
        self._store = store
        self._leases = leases
        self._lock_wait = lock_wait

    @unary
    def Info(
        self, request: content_pb2.InfoRequest, context: grpc.ServicerContext
    ) -> content_pb2.InfoResponse:
        namespaces.required(context)
        info = self._store.info(Digest.parse(request.digest))
        return content_pb2.InfoResponse(info=info_to_pb(info))

    @unary
    def Update(
        self, request: content_pb2.UpdateRequest, context: grpc.ServicerContext
    ) -> content_pb2.UpdateResponse:
        namespaces.required(context)
        paths = tuple(request.update_mask.paths) if request.HasField("update_mask") else ()
        info = info_from_pb(request.info)
        validate_labels(info.labels)  # the request's own labels, before any lookup
        info = self._store.update(info, *paths)
        return content_pb2.UpdateResponse(info=info_to_pb(info))

    @stream
    def List(
        self, request: content_pb2.ListContentRequest, context: grpc.ServicerContext
    ) -> Iterator[content_pb2.ListContentResponse]:
        namespaces.required(context)
        batch: list[content_pb2.Info] = []
        size = 0
        for info in self._store.walk(*request.filters):
            message = info_to_pb(info)
            batch.append(message)
            size += message.ByteSize()
            if len(batch) == LIST_BATCH or size >= LIST_BATCH_BYTES:
                yield content_pb2.ListContentResponse(info=batch)
                batch, size = [], 0
        if batch:
            yield content_pb2.ListContentResponse(info=batch)

    @unary
    def Delete(
        self, request: content_pb2.DeleteContentRequest, context: grpc.ServicerContext
    ) -> Empty:
        namespaces.required(context)
        self._store.delete(Digest.parse(request.digest))
        return Empty()

    @stream
    def Read(
        self, request: content_pb2.ReadContentRequest, context: grpc.ServicerContext
    ) -> Iterator[content_pb2.ReadContentResponse]:
        namespaces.required(context)
        digest = Digest.parse(request.digest)
        with self._store.reader_at(digest) as reader:
            size = reader.size
            offset = max(request.offset, 0)
            if offset > size:
                raise errdefs.OutOfRange(f"read past object length {size} bytes")
            end = size if request.size <= 0 else min(size, offset + request.size)
            while offset < end:
                data = reader.read_at(offset, min(READ_CHUNK, end - offset))
                if not data:
                    raise errdefs.DataLoss(f"content {digest} ended at {offset} of {size}")
                yield content_pb2.ReadContentResponse(offset=offset, data=data)
                offset += len(data)

    @unary
    def Status(
        self, request: content_pb2.StatusRequest, context: grpc.ServicerContext
    ) -> content_pb2.StatusResponse:
        namespaces.required(context)
        status = self._store.status(request.ref)
        return content_pb2.StatusResponse(status=status_to_pb(status))

    @unary
    def ListStatuses(
        self, request: content_pb2.ListStatusesRequest, context: grpc.ServicerContext
    ) -> content_pb2.ListStatusesResponse:
        namespaces.required(context)
        found = self._store.list_statuses(*request.filters)
        return content_pb2.ListStatusesResponse(statuses=[status_to_pb(s) for s in found])

    @unary
    def Abort(self, request: content_pb2.AbortRequest, context: grpc.ServicerContext) -> Empty:
        namespaces.required(context)
        self._store.abort(request.ref)
        return Empty()

    @stream
    def Write(
        self,
        request_iterator: Iterator[content_pb2.WriteContentRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[content_pb2.WriteContentResponse]:
        ns = namespaces.required(context)
        lease_id = namespaces.lease(context)
        if lease_id is not None:
            self._leases.get(ns, lease_id)

        def open_session(first: content_pb2.WriteContentRequest) -> WriteSession:
            validate_ref(first.ref)
            expected = Digest.parse(first.expected) if first.expected else None
            total = max(first.total, 0)
            desc = Descriptor(expected, total) if expected is not None else None
            if lease_id is not None and expected is not None:
                # containerd adds content that exists already to the lease; recorded
                # before the existence check, so no gc removes it in between.
                self._record(ns, lease_id, "content", str(expected))
            writer = open_writer(
                self._store, first.ref, desc, self._lock_wait, context.is_active, total=total
            )
            on_commit = None
            if lease_id is not None:
                self._record(ns, lease_id, "ingests", first.ref)

                def on_commit(digest: Digest) -> None:
                    self._record(ns, lease_id, "content", str(digest))
                    self._record(ns, lease_id, "ingests", first.ref, remove=True)

            return WriteSession(self._store, writer, first.ref, total, expected, on_commit)

        return serve_stream(request_iterator, context, open_session)

    def _record(
        self, ns: str, lease_id: str, rtype: str, rid: str, *, remove: bool = False
    ) -> None:
        """Add (or remove) a resource on the stream's lease; a lease deleted meanwhile
        protects nothing, so its NotFound is ignored."""
        try:
            if remove:
                self._leases.delete_resource(ns, lease_id, rtype, rid)
            else:
                self._leases.add_resource(ns, lease_id, rtype, rid)
        except errdefs.NotFound:
            pass
