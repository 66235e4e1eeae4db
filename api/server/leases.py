"""Leases: containerd's ``containerd.services.leases.v1.Leases`` over the store's lease
records (:mod:`store.leases`, which holds the record, its persistence per namespace and
the rules), converted to and from protobuf here.
"""

from __future__ import annotations

import grpc
from google.protobuf.empty_pb2 import Empty

from ingestq.api import namespaces
from ingestq.api.convert import timestamp
from ingestq.api.errors import unary
from ingestq.api.proto.containerd.services.leases.v1 import leases_pb2
from ingestq.store.leases import LeaseRecord, Leases


def lease_to_pb(lease: LeaseRecord) -> leases_pb2.Lease:
    """The ``Lease`` message (always with its creation time)."""
    return leases_pb2.Lease(
        id=lease.id, created_at=timestamp(lease.created_at), labels=dict(lease.labels)
    )


class LeasesService:
    """``containerd.services.leases.v1.Leases`` over a store's leases
    (:class:`ingestq.store.leases.Leases`)."""

    def __init__(self, leases: Leases) -> None:
        self._leases = leases

    @unary
    def Create(
        self, request: leases_pb2.CreateRequest, context: grpc.ServicerContext
    ) -> leases_pb2.CreateResponse:
        ns = namespaces.required(context)
        lease = self._leases.create(ns, request.id, dict(request.labels))
        return leases_pb2.CreateResponse(lease=lease_to_pb(lease))

    @unary
    def Delete(self, request: leases_pb2.DeleteRequest, context: grpc.ServicerContext) -> Empty:
        self._leases.delete(namespaces.required(context), request.id)
        return Empty()

    @unary
    def List(
        self, request: leases_pb2.ListRequest, context: grpc.ServicerContext
    ) -> leases_pb2.ListResponse:
        found = self._leases.list(namespaces.required(context), *request.filters)
        return leases_pb2.ListResponse(leases=[lease_to_pb(x) for x in found])

    @unary
    def AddResource(
        self, request: leases_pb2.AddResourceRequest, context: grpc.ServicerContext
    ) -> Empty:
        ns = namespaces.required(context)
        self._leases.add_resource(ns, request.id, request.resource.type, request.resource.id)
        return Empty()

    @unary
    def DeleteResource(
        self, request: leases_pb2.DeleteResourceRequest, context: grpc.ServicerContext
    ) -> Empty:
        ns = namespaces.required(context)
        self._leases.delete_resource(ns, request.id, request.resource.type, request.resource.id)
        return Empty()

    @unary
    def ListResources(
        self, request: leases_pb2.ListResourcesRequest, context: grpc.ServicerContext
    ) -> leases_pb2.ListResourcesResponse:
        found = self._leases.resources(namespaces.required(context), request.id)
        return leases_pb2.ListResourcesResponse(
            resources=[leases_pb2.Resource(type=t, id=i) for t, i in found]
        )
