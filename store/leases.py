"""Lease records and their persistence, per namespace: the one lease format of a store root.

A lease (containerd's) is an id, a creation time, labels and the resources (type, id)
recorded on it. While it exists, a lease keeps the content and ingests recorded on it from the
garbage collector (:mod:`store.gc`); clients that need a lease (``ctr content fetch``)
work unchanged and an operator can see what each lease covers. Leases whose
``containerd.io/gc.expire`` time has passed are dropped when the namespace's record is
next read.

The small protocols :class:`LeaseReader` (what gc and the introspection read) and
:class:`Leases` (what the gRPC Leases service and a job's lease change) are what every
user takes, from the store (:func:`leases_of`): :class:`LeaseStore` here for a local
root, :class:`ingestq.s3.leases.S3LeaseStore` (one object per lease in the bucket) for
an S3 store.

Storage of :class:`LeaseStore`: ``leases/<namespace>.json`` under the store root (see
:mod:`store.layout`), a JSON object
``{id: {"created_at", "labels", "resources": [[type, id], ...]}}``, replaced atomically
under the namespace's lock file (several servers may share a root). Every change also
holds ``locks/leases.lock`` (:func:`leases_lock`), which the garbage collector holds
while it deletes, so it sees every lease change made before.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ingestq import errdefs
from ingestq.store.atomic import write_json
from ingestq.store.filters import fields, parse
from ingestq.store.labels import validate as validate_labels
from ingestq.store.layout import RootLayout
from ingestq.store.lockfile import held
from ingestq.store.oserrors import from_os_error
from ingestq.store.ownfiles import read_record
from ingestq.store.values import utcnow

#: The largest lease record read (one namespace's leases); a longer one is DataLoss.
MAX_LEASES_FILE = 64 << 20


#: The label that makes a lease expire (RFC 3339).
EXPIRE_LABEL = "containerd.io/gc.expire"
#: Resource types a lease records (besides ``snapshots/<name>``).
RESOURCE_TYPES = ("content", "ingests")

# A namespace names a file: containerd's identifiers fit, nothing that could be a path.
_NAMESPACE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")


@dataclass(frozen=True)
class LeaseRecord:
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


#: The longest lease id and resource id, in UTF-8 bytes (a ref's bound).
MAX_ID = 4096


def validate_lease_id(lease_id: str) -> None:
    """InvalidArgument for a lease id longer than :data:`MAX_ID` bytes."""
    if len(lease_id.encode(errors="surrogatepass")) > MAX_ID:
        raise errdefs.InvalidArgument(f"lease id longer than {MAX_ID} bytes")


def validate_resource(rtype: str, rid: str) -> None:
    """InvalidArgument unless ``rtype`` is ``content``, ``ingests`` or ``snapshots/<name>``
    and ``rid`` is not empty, both at most :data:`MAX_ID` bytes."""
    if not rid:
        raise errdefs.InvalidArgument("resource id must not be empty")
    if len(rid.encode(errors="surrogatepass")) > MAX_ID or len(rtype) > MAX_ID:
        raise errdefs.InvalidArgument(f"resource id or type longer than {MAX_ID} bytes")
    if rtype not in RESOURCE_TYPES and not (
        rtype.startswith("snapshots/") and len(rtype) > len("snapshots/")
    ):
        raise errdefs.InvalidArgument(f'resource type "{rtype}" is not supported')


def validate_namespace(namespace: str) -> None:
    """InvalidArgument unless ``namespace`` is an identifier (it names a file or a key)."""
    if not _NAMESPACE.fullmatch(namespace):
        raise errdefs.InvalidArgument(f"namespace {namespace!r} is not an identifier")


def leases_lock(layout: RootLayout) -> Path:
    """The lock file every lease change holds (and gc while it deletes)."""
    return layout.lock("leases.lock")


def new_lease_id() -> str:
    """containerd's generated id shape: ``<unix nanoseconds>-<base64url of 3 bytes>``."""
    return f"{time.time_ns()}-{base64.urlsafe_b64encode(secrets.token_bytes(3)).decode()}"


def lease_to_json(lease: LeaseRecord) -> dict[str, Any]:
    """A lease's JSON object (without its id): ``created_at``, ``labels``, ``resources``."""
    return {
        "created_at": lease.created_at.isoformat(),
        "labels": dict(lease.labels),
        "resources": [list(r) for r in lease.resources],
    }


def lease_from_json(lease_id: str, d: Mapping[str, Any]) -> LeaseRecord:
    """The lease ``lease_id`` of :func:`lease_to_json`'s object. TypeError, ValueError,
    KeyError or AttributeError when it is malformed (callers raise DataLoss)."""
    return LeaseRecord(
        id=lease_id,
        created_at=datetime.fromisoformat(d["created_at"]),
        labels={str(k): str(v) for k, v in dict(d.get("labels") or {}).items()},
        resources=tuple((str(t), str(i)) for t, i in d.get("resources") or ()),
    )


class LeaseReader(Protocol):
    """Reading a store's leases (gc's roots, the namespaces list). Every method raises
    InvalidArgument for a namespace that is not an identifier and DataLoss for a record
    that is not readable; a remote store's kinds (Unavailable, ...) too. Expired leases
    are never returned."""

    def namespaces(self) -> list[str]:
        """The namespaces that have leases (or had: an empty one may be listed), sorted."""
        ...

    def get(self, namespace: str, lease_id: str) -> LeaseRecord:
        """The lease; NotFound ``lease "<id>"`` if there is none."""
        ...

    def list(self, namespace: str, *filters: str) -> list[LeaseRecord]:
        """The namespace's leases matching any filter (fields ``id``, ``labels.*``).
        InvalidArgument for a malformed filter."""
        ...

    def resources(self, namespace: str, lease_id: str) -> Sequence[tuple[str, str]]:
        """The (type, id) resources recorded on a lease. NotFound for an unknown lease."""
        ...


class Leases(LeaseReader, Protocol):
    """Reading and changing a store's leases. Changes are never lost to a concurrent
    change of another client, thread or host."""

    def create(self, namespace: str, lease_id: str, labels: Mapping[str, str]) -> LeaseRecord:
        """Create a lease (a generated id when ``lease_id`` is empty). AlreadyExists
        ``lease "<id>"`` for a duplicate, InvalidArgument for oversize labels."""
        ...

    def delete(self, namespace: str, lease_id: str) -> None:
        """Delete a lease; NotFound ``lease "<id>"`` if there is none."""
        ...

    def add_resource(self, namespace: str, lease_id: str, rtype: str, rid: str) -> None:
        """Record a resource on a lease (idempotent). NotFound for an unknown lease,
        InvalidArgument for an unsupported resource (see :func:`validate_resource`)."""
        ...

    def add_resources(
        self, namespace: str, lease_id: str, resources: Sequence[tuple[str, str]]
    ) -> None:
        """Record several resources on a lease in one change (see :meth:`add_resource`)."""
        ...

    def delete_resource(self, namespace: str, lease_id: str, rtype: str, rid: str) -> None:
        """Forget a resource (absent is fine). NotFound for an unknown lease."""
        ...

    def prune_expired(self, namespace: str, now: datetime, *, dry_run: bool = False) -> list[str]:
        """Remove the namespace's leases expired at ``now``; their ids (with
        ``dry_run``, only listed)."""
        ...


@runtime_checkable
class KeepsLeases(Protocol):
    """A store that gives its own lease store (the local store, the S3 store)."""

    def leases(self) -> Leases:
        """The store's leases."""
        ...


def leases_of(store: object, root: str | os.PathLike[str]) -> Leases:
    """The leases of ``store``: its own when it keeps them (:class:`KeepsLeases`), else
    the :class:`LeaseStore` under ``root`` (PermissionDenied / ResourceExhausted when
    that cannot be created)."""
    if isinstance(store, KeepsLeases):
        return store.leases()
    return LeaseStore(root)


class LeaseStore:
    """The leases of every namespace under a store root. Thread- and process-safe.

    Every method raises InvalidArgument for a namespace that is not an identifier,
    DataLoss for a namespace record that is not readable, PermissionDenied /
    ResourceExhausted (or another kind) when it cannot be written, and Unavailable when
    another process holds its lock files for ``INGESTQ_LOCK_FILE_WAIT`` seconds.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.layout = RootLayout(Path(root))
        try:
            self.layout.leases.mkdir(parents=True, exist_ok=True)
            self.layout.locks.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise from_os_error(e, f"open leases under {root}") from e
        self._mutex = threading.Lock()

    def _path(self, namespace: str) -> Path:
        validate_namespace(namespace)
        return self.layout.lease_file(namespace)

    @contextmanager
    def _edit(self, namespace: str, *, rewrite: bool = False) -> Iterator[dict[str, LeaseRecord]]:
        path = self._path(namespace)
        locks = (leases_lock(self.layout), self.layout.leases_lock(namespace))
        with self._mutex, held(*locks, what=f"lock leases of {namespace}"):
            leases = self._load(namespace)
            before = dict(leases)
            yield leases
            if rewrite or leases != before:
                data = {lid: lease_to_json(lease) for lid, lease in leases.items()}
                try:
                    # Not fsynced: the Write stream records resources on every blob
                    # it writes; a crash loses at most what the running writers
                    # were protecting, and those writers died with it. Never larger
                    # than it may be read back (EFBIG: ResourceExhausted, unchanged).
                    write_json(path, data, sync=False, limit=MAX_LEASES_FILE)
                except OSError as e:
                    raise from_os_error(e, f"write leases of {namespace}") from e

    def _read(self, namespace: str) -> Any:
        """The namespace's lease record as JSON (None if there is none): DataLoss when
        it is garbled, too long or planted, an OS error's own kind otherwise."""
        what = f"read leases of {namespace}"
        data = read_record(self._path(namespace), MAX_LEASES_FILE, what)
        try:
            return None if data is None else json.loads(data)
        except ValueError as e:
            raise errdefs.DataLoss(f"{what}: {e}") from e

    def _load(self, namespace: str) -> dict[str, LeaseRecord]:
        raw = self._read(namespace)
        if raw is None:
            return {}
        now = utcnow()
        out: dict[str, LeaseRecord] = {}
        try:
            for lid, d in dict(raw).items():
                lease = lease_from_json(str(lid), d)
                if not lease.expired(now):
                    out[lease.id] = lease
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise errdefs.DataLoss(f"leases of {namespace} are malformed: {e!r}") from e
        return out

    def prune_expired(self, namespace: str, now: datetime, *, dry_run: bool = False) -> list[str]:
        """Remove the namespace's leases expired at ``now`` from its record; their ids
        (with ``dry_run``, only listed)."""
        raw = self._read(namespace)
        if raw is None:
            return []
        try:
            expired = sorted(
                str(lid)
                for lid, d in dict(raw).items()
                if lease_from_json(str(lid), d).expired(now)
            )
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise errdefs.DataLoss(f"leases of {namespace} are malformed: {e!r}") from e
        if expired and not dry_run:
            with self._edit(namespace, rewrite=True):
                pass  # reading drops the expired leases; the rewrite persists that
        return expired

    def namespaces(self) -> list[str]:
        """The namespaces that have a lease record, sorted."""
        try:
            names = os.listdir(self.layout.leases)
        except OSError:
            return []
        found = (n.removesuffix(".json") for n in names if n.endswith(".json"))
        return sorted(n for n in found if _NAMESPACE.fullmatch(n))

    def create(self, namespace: str, lease_id: str, labels: Mapping[str, str]) -> LeaseRecord:
        """Create a lease (a generated id when ``lease_id`` is empty). AlreadyExists
        ``lease "<id>"`` for a duplicate, InvalidArgument for oversize labels or id."""
        validate_labels(labels)
        validate_lease_id(lease_id)
        lease = LeaseRecord(id=lease_id or new_lease_id(), created_at=utcnow(), labels=dict(labels))
        with self._edit(namespace) as leases:
            if lease.id in leases:
                raise errdefs.AlreadyExists(f'lease "{lease.id}"')
            leases[lease.id] = lease
        return lease

    def get(self, namespace: str, lease_id: str) -> LeaseRecord:
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

    def list(self, namespace: str, *filters: str) -> list[LeaseRecord]:
        """The namespace's leases matching any filter (fields ``id``, ``labels.*``).
        InvalidArgument for a malformed filter."""
        flt = parse(*filters)
        with self._mutex:
            leases = list(self._load(namespace).values())
        return [lease for lease in leases if flt.match(fields({"id": lease.id}, lease.labels))]

    def add_resource(self, namespace: str, lease_id: str, rtype: str, rid: str) -> None:
        """Record a resource on a lease (idempotent). NotFound for an unknown lease,
        InvalidArgument for an unsupported resource (see :func:`validate_resource`)."""
        validate_resource(rtype, rid)
        with self._edit(namespace) as leases:
            lease = leases.get(lease_id)
            if lease is None:
                raise errdefs.NotFound(f'lease "{lease_id}"')
            if (rtype, rid) not in lease.resources:
                leases[lease_id] = replace(lease, resources=(*lease.resources, (rtype, rid)))

    def add_resources(
        self, namespace: str, lease_id: str, resources: Sequence[tuple[str, str]]
    ) -> None:
        """Record several resources on a lease in one change (see :meth:`add_resource`)."""
        for rtype, rid in resources:
            validate_resource(rtype, rid)
        with self._edit(namespace) as leases:
            lease = leases.get(lease_id)
            if lease is None:
                raise errdefs.NotFound(f'lease "{lease_id}"')
            new = tuple(r for r in dict.fromkeys(resources) if r not in lease.resources)
            if new:
                leases[lease_id] = replace(lease, resources=(*lease.resources, *new))

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


__all__ = [
    "EXPIRE_LABEL",
    "RESOURCE_TYPES",
    "KeepsLeases",
    "LeaseReader",
    "LeaseRecord",
    "LeaseStore",
    "Leases",
    "lease_from_json",
    "lease_to_json",
    "leases_of",
    "new_lease_id",
    "validate_lease_id",
    "validate_namespace",
    "validate_resource",
]
