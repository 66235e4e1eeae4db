"""Leases: containerd's ``containerd.services.leases.v1.Leases`` over a small persistent
record, per namespace.

ingestq has no garbage collector, so a lease protects nothing that would otherwise go
away; it is still created, listed, deleted and **recorded** with the resources written
under it (the Write stream adds its ingest, then the committed blob), so clients that
need a lease (``ctr content fetch``) work unchanged and an operator can see what each
lease covers. Leases whose ``containerd.io/gc.expire`` time has passed are dropped when
the namespace's record is next read.

Storage: ``<root>/leases/<namespace>.json``, replaced atomically under a file lock
(several servers may share a root).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import filelock
import grpc
from google.protobuf.empty_pb2 import Empty

from ingestq import errdefs
from ingestq.api import namespaces
from ingestq.api.convert import timestamp
from ingestq.api.errors import unary
from ingestq.api.proto.containerd.services.leases.v1 import leases_pb2
from ingestq.store import filters as filterlang
from ingestq.store import labels as labelrules
from ingestq.store.values import utcnow

EXPIRE_LABEL = "containerd.io/gc.expire"
RESOURCE_TYPES = ("content", "ingests")


@dataclass(frozen=True)
class Lease:
    """One lease: id, creation time, labels and the resources (type, id) recorded on it."""

    id: str
    created_at: datetime
    labels: Mapping[str, str] = field(default_factory=dict)
    resources: tuple[tuple[str, str], ...] = ()

    def expired(self, now: datetime) -> bool:
        """Whether its ``containerd.io/gc.expire`` time (RFC 3339) has passed."""
        text = self.labels.get(EXPIRE_LABEL)
        if not text:
            return False
        try:
            at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return False
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        return at <= now


def validate_resource(rtype: str, rid: str) -> None:
    """InvalidArgument unless ``rtype`` is ``content``, ``ingests`` or ``snapshots/<name>``
    and ``rid`` is not empty."""
    if not rid:
        raise errdefs.InvalidArgument("resource id must not be empty")
    if rtype not in RESOURCE_TYPES and not (
        rtype.startswith("snapshots/") and len(rtype) > len("snapshots/")
    ):
        raise errdefs.InvalidArgument(f'resource type "{rtype}" is not supported')


def new_lease_id() -> str:
    """containerd's generated id shape: ``<unix nanoseconds>-<base64url of 3 bytes>``."""
    return f"{time.time_ns()}-{base64.urlsafe_b64encode(secrets.token_bytes(3)).decode()}"


class LeaseStore:
    """The leases of every namespace under ``<root>/leases``. Thread- and process-safe."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.dir = Path(root) / "leases"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._mutex = threading.Lock()

    @contextmanager
    def _edit(self, namespace: str) -> Iterator[dict[str, Lease]]:
        with self._mutex, filelock.FileLock(self.dir / ".lock"):
            leases = self._load(namespace)
            before = dict(leases)
            yield leases
            if leases != before:
                self._save(namespace, leases)

    def _path(self, namespace: str) -> Path:
        return self.dir / f"{namespaces.validate(namespace)}.json"

    def _load(self, namespace: str) -> dict[str, Lease]:
        try:
            raw: Any = json.loads(self._path(namespace).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise errdefs.DataLoss(f"read leases of {namespace}: {e}") from e
        now = utcnow()
        out: dict[str, Lease] = {}
        try:
            for lid, d in dict(raw).items():
                lease = Lease(
                    id=str(lid),
                    created_at=datetime.fromisoformat(d["created_at"]),
                    labels={str(k): str(v) for k, v in dict(d.get("labels") or {}).items()},
                    resources=tuple((str(t), str(i)) for t, i in d.get("resources") or ()),
                )
                if not lease.expired(now):
                    out[lease.id] = lease
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise errdefs.DataLoss(f"leases of {namespace} are malformed: {e!r}") from e
        return out

    def _save(self, namespace: str, leases: Mapping[str, Lease]) -> None:
        data = {
            lid: {
                "created_at": lease.created_at.isoformat(),
                "labels": dict(lease.labels),
                "resources": [list(r) for r in lease.resources],
            }
            for lid, lease in leases.items()
        }
        path = self._path(namespace)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)

    def create(self, namespace: str, lease_id: str, labels: Mapping[str, str]) -> Lease:
        """Create a lease (a generated id when ``lease_id`` is empty). AlreadyExists
        ``lease "<id>"`` for a duplicate, InvalidArgument for oversize labels."""
        labelrules.validate(labels)
        lease = Lease(id=lease_id or new_lease_id(), created_at=utcnow(), labels=dict(labels))
        with self._edit(namespace) as leases:
            if lease.id in leases:
                raise errdefs.AlreadyExists(f'lease "{lease.id}"')
            leases[lease.id] = lease
        return lease

    def get(self, namespace: str, lease_id: str) -> Lease:
        """The lease; NotFound ``lease "<id>"`` if there is none."""
        with self._mutex:
            lease = self._load(namespace).get(lease_id)
        if lease is None:
            raise errdefs.NotFound(f'lease "{lease_id}"')
        return lease

    def delete(self, namespace: str, lease_id: str) -> None:
        """Delete a lease; NotFound ``lease "<id>"`` if there is none."""
        with self._edit(namespace) as leases:
            if leases.pop(lease_id, None) is None:
                raise errdefs.NotFound(f'lease "{lease_id}"')

    def list(self, namespace: str, *filters: str) -> list[Lease]:
        """The namespace's leases matching any filter (fields ``id``, ``labels.*``)."""
        flt = filterlang.parse(*filters)
        with self._mutex:
            leases = list(self._load(namespace).values())
        return [lease for lease in leases if flt.match(_adaptor(lease))]

    def add_resource(self, namespace: str, lease_id: str, rtype: str, rid: str) -> None:
        """Record a resource on a lease (idempotent). NotFound for an unknown lease."""
        validate_resource(rtype, rid)
        with self._edit(namespace) as leases:
            lease = leases.get(lease_id)
            if lease is None:
                raise errdefs.NotFound(f'lease "{lease_id}"')
            if (rtype, rid) not in lease.resources:
                leases[lease_id] = replace(lease, resources=(*lease.resources, (rtype, rid)))

    def delete_resource(self, namespace: str, lease_id: str, rtype: str, rid: str) -> None:
        """Forget a resource (absent is fine). NotFound for an unknown lease."""
        with self._edit(namespace) as leases:
            lease = leases.get(lease_id)
            if lease is None:
                raise errdefs.NotFound(f'lease "{lease_id}"')
            kept = tuple(r for r in lease.resources if r != (rtype, rid))
            if kept != lease.resources:
                leases[lease_id] = replace(lease, resources=kept)

    def resources(self, namespace: str, lease_id: str) -> Sequence[tuple[str, str]]:
        """The (type, id) resources recorded on a lease. NotFound for an unknown lease."""
        return self.get(namespace, lease_id).resources


def _adaptor(lease: Lease) -> filterlang.Adaptor:
    def lookup(fieldpath: Sequence[str]) -> str | None:
        if tuple(fieldpath) == ("id",):
            return lease.id
        if len(fieldpath) > 1 and fieldpath[0] == "labels":
            return lease.labels.get(".".join(fieldpath[1:]))
        return None

    return lookup


def lease_to_pb(lease: Lease) -> leases_pb2.Lease:
    """The ``Lease`` message (always with its creation time)."""
    return leases_pb2.Lease(
        id=lease.id, created_at=timestamp(lease.created_at), labels=dict(lease.labels)
    )


class LeasesService:
    """``containerd.services.leases.v1.Leases`` over a :class:`LeaseStore`."""

    def __init__(self, leases: LeaseStore) -> None:
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
