"""Introspection, Version and Namespaces: what containerd clients ask a server about
itself.

* ``Introspection/Server``: a per-process uuid, the pid and the pid namespace inode,
  and no deprecation warnings (ctr >= 1.6.29 calls it on connect and warns if it fails).
* ``Introspection/Plugins``: one ``io.containerd.grpc.v1`` entry per service served,
  plus the content store itself (``io.containerd.content.v1``/``content``, exporting its
  root); filters on ``type`` and ``id``.
* ``Version/Version``: ingestq's package version.
* ``Namespaces``: namespaces are not partitions in ingestq (see
  :mod:`api.namespaces`); Get answers any valid name with empty labels (containerd's
  answer for an unknown namespace), List returns ``default`` plus the namespaces that
  hold leases, Create/Update/Delete are accepted and change nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import grpc
from google.protobuf.empty_pb2 import Empty

from ingestq.api import namespaces
from ingestq.api.errors import unary
from ingestq.api.proto.containerd.services.introspection.v1 import introspection_pb2
from ingestq.api.proto.containerd.services.namespaces.v1 import namespace_pb2
from ingestq.api.proto.containerd.services.version.v1 import version_pb2
from ingestq.store import filters as filterlang
from ingestq.store.leases import LeaseReader

GRPC_PLUGIN = "io.containerd.grpc.v1"
SERVICES = ("content", "images", "introspection", "leases", "namespaces", "version")


def package_version() -> str:
    """ingestq's installed version, or ``0+unknown`` when it is not installed."""
    try:
        return metadata.version("ingestq")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _pidns() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


class IntrospectionService:
    """``containerd.services.introspection.v1.Introspection``."""

    def __init__(self, root: Path, services: Sequence[str] = SERVICES) -> None:
        self._uuid = str(uuid.uuid4())
        self._plugins = [
            introspection_pb2.Plugin(
                type="io.containerd.content.v1", id="content", exports={"root": str(root)}
            ),
            *(introspection_pb2.Plugin(type=GRPC_PLUGIN, id=name) for name in services),
        ]

    @unary
    def Server(
        self, request: Empty, context: grpc.ServicerContext
    ) -> introspection_pb2.ServerResponse:
        """No namespace needed (containerd's does not require one)."""
        return introspection_pb2.ServerResponse(uuid=self._uuid, pid=os.getpid(), pidns=_pidns())

    @unary
    def Plugins(
        self, request: introspection_pb2.PluginsRequest, context: grpc.ServicerContext
    ) -> introspection_pb2.PluginsResponse:
        flt = filterlang.parse(*request.filters)

        def adaptor(p: introspection_pb2.Plugin) -> filterlang.Adaptor:
            fields: dict[tuple[str, ...], str] = {("type",): p.type, ("id",): p.id}
            return lambda path: fields.get(tuple(path))

        return introspection_pb2.PluginsResponse(
            plugins=[p for p in self._plugins if flt.match(adaptor(p))]
        )


class VersionService:
    """``containerd.services.version.v1.Version``: ingestq's version."""

    @unary
    def Version(self, request: Empty, context: grpc.ServicerContext) -> version_pb2.VersionResponse:
        return version_pb2.VersionResponse(version=f"ingestq {package_version()}", revision="")


class NamespacesService:
    """``containerd.services.namespaces.v1.Namespaces`` (see the module docstring)."""

    def __init__(self, leases: LeaseReader) -> None:
        self._leases = leases

    def _known(self) -> list[str]:
        return sorted({"default", *self._leases.namespaces()})

    @unary
    def Get(
        self, request: namespace_pb2.GetNamespaceRequest, context: grpc.ServicerContext
    ) -> namespace_pb2.GetNamespaceResponse:
        name = namespaces.validate(request.name)
        return namespace_pb2.GetNamespaceResponse(namespace=namespace_pb2.Namespace(name=name))

    @unary
    def List(
        self, request: namespace_pb2.ListNamespacesRequest, context: grpc.ServicerContext
    ) -> namespace_pb2.ListNamespacesResponse:
        return namespace_pb2.ListNamespacesResponse(
            namespaces=[namespace_pb2.Namespace(name=n) for n in self._known()]
        )

    @unary
    def Create(
        self, request: namespace_pb2.CreateNamespaceRequest, context: grpc.ServicerContext
    ) -> namespace_pb2.CreateNamespaceResponse:
        namespaces.validate(request.namespace.name)
        return namespace_pb2.CreateNamespaceResponse(namespace=request.namespace)

    @unary
    def Update(
        self, request: namespace_pb2.UpdateNamespaceRequest, context: grpc.ServicerContext
    ) -> namespace_pb2.UpdateNamespaceResponse:
        namespaces.validate(request.namespace.name)
        return namespace_pb2.UpdateNamespaceResponse(namespace=request.namespace)

    @unary
    def Delete(
        self, request: namespace_pb2.DeleteNamespaceRequest, context: grpc.ServicerContext
    ) -> Empty:
        namespaces.validate(request.name)
        return Empty()
