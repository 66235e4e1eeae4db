"""Leases in the bucket: :class:`S3LeaseStore`, the :class:`ingestq.store.leases.Leases`
of an S3 store, so every host that shares the bucket (workers, ``ingestq serve``, gc)
sees every lease.

One object per lease, ``<prefix>/leases/<namespace>/<quoted id>.json``, holding the
lease's JSON (:func:`ingestq.store.leases.lease_to_json`, plus its ``id``):

* create is a conditional PUT (``If-None-Match: *``): of two creates of one id exactly
  one succeeds, the other is AlreadyExists (an expired lease of that id is replaced,
  conditionally on its ETag);
* a resource change reads the object with its ETag and writes it back with
  ``If-Match``; a change that loses a race (412) reads again and re-applies itself, a
  bounded number of times (:meth:`ingestq.s3.bucket.Bucket.change`), so concurrent
  changes on many hosts lose nothing;
* listing is ListObjectsV2 under the namespace's prefix and one GET per lease.

The store needs a server that honours conditional writes (AWS S3, SeaweedFS, MinIO do),
as its image index does. Adding ``content`` resources then passes through each new
digest's blob lock (:mod:`ingestq.s3.bloblock`) when a locker is given: once
:meth:`S3LeaseStore.add_resources` returns, a gc deleting that blob has finished (so an
existence check made now is true only for a blob that stays) and every later gc reads
the lease. Errors are the kinds of :func:`ingestq.s3.errors.from_s3_error`; DataLoss for
a lease object that is not a lease. A prune racing with the re-creation of the same
expired id may delete the new lease (ids are unique in practice: generated, or a job's).
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

from ingestq import errdefs
from ingestq.s3.bloblock import blob_lock
from ingestq.s3.bucket import Bucket, ObjectInfo
from ingestq.s3.location import S3Location
from ingestq.store.digest import Digest
from ingestq.store.filters import fields, parse
from ingestq.store.labels import validate as validate_labels
from ingestq.store.leases import (
    LeaseRecord,
    lease_from_json,
    lease_to_json,
    new_lease_id,
    validate_lease_id,
    validate_namespace,
    validate_resource,
)
from ingestq.store.locks import RefLocker
from ingestq.store.values import utcnow

_SUFFIX = ".json"


class S3LeaseStore:
    """The leases of an S3 store (see the module docstring); a
    :class:`ingestq.store.leases.Leases`. ``locker`` is the store's ref locker (its
    blob locks are what gc takes); without one, adds take no blob lock. Thread- and
    process-safe, across hosts."""

    def __init__(self, bucket: Bucket, location: S3Location, locker: RefLocker | None) -> None:
        self._bucket = bucket
        self._location = location
        self._locker = locker

    def _prefix(self, namespace: str) -> str:
        validate_namespace(namespace)
        return self._location.key("leases", namespace) + "/"

    def key(self, namespace: str, lease_id: str) -> str:
        """The key of lease ``lease_id`` of ``namespace`` (InvalidArgument for a bad
        namespace)."""
        return self._prefix(namespace) + quote(lease_id, safe="") + _SUFFIX

    def _decode(self, namespace: str, lease_id: str, data: bytes) -> LeaseRecord:
        try:
            raw: Any = json.loads(data)
            return lease_from_json(lease_id, dict(raw))
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            where = self.key(namespace, lease_id)
            raise errdefs.DataLoss(f"lease object {where} is malformed: {e!r}") from e

    @staticmethod
    def _encode(lease: LeaseRecord) -> bytes:
        return json.dumps({"id": lease.id, **lease_to_json(lease)}).encode()

    def _read(self, namespace: str, lease_id: str) -> tuple[LeaseRecord, ObjectInfo] | None:
        """The lease (expired or not) and its object's info; None when there is none."""
        found = self._bucket.read(self.key(namespace, lease_id))
        if found is None:
            return None
        return self._decode(namespace, lease_id, found[0]), found[1]

    # LeaseReader ---------------------------------------------------------------------
    def namespaces(self) -> list[str]:
        """The namespaces with at least one lease object, sorted."""
        top = self._location.key("leases") + "/"
        found = set()
        for obj in self._bucket.list_objects(top):
            ns, sep, _ = obj.key[len(top) :].partition("/")
            if sep:
                found.add(ns)
        out = []
        for ns in sorted(found):
            try:
                validate_namespace(ns)
            except errdefs.InvalidArgument:
                continue
            out.append(ns)
        return out

    def get(self, namespace: str, lease_id: str) -> LeaseRecord:
        """The lease; NotFound ``lease "<id>"`` if there is none (or it has expired)."""
        found = self._read(namespace, lease_id)
        if found is None or found[0].expired(utcnow()):
            raise errdefs.NotFound(f'lease "{lease_id}"')
        return found[0]

    def _all(self, namespace: str) -> list[LeaseRecord]:
        """Every lease object of the namespace (expired ones too), in key order."""
        prefix = self._prefix(namespace)
        out = []
        for obj in self._bucket.list_objects(prefix):
            name = obj.key[len(prefix) :]
            if "/" in name or not name.endswith(_SUFFIX):
                continue
            found = self._bucket.get_or_none(obj.key)
            if found is not None:  # else deleted meanwhile
                out.append(self._decode(namespace, unquote(name[: -len(_SUFFIX)]), found[0]))
        return out

    def list(self, namespace: str, *filters: str) -> list[LeaseRecord]:
        """The namespace's unexpired leases matching any filter (fields ``id``,
        ``labels.*``). InvalidArgument for a malformed filter."""
        flt = parse(*filters)
        now = utcnow()
        return [
            lease
            for lease in self._all(namespace)
            if not lease.expired(now) and flt.match(fields({"id": lease.id}, lease.labels))
        ]

    def resources(self, namespace: str, lease_id: str) -> Sequence[tuple[str, str]]:
        """The (type, id) resources recorded on a lease. NotFound for an unknown lease."""
        return self.get(namespace, lease_id).resources

    # Leases --------------------------------------------------------------------------
    def create(self, namespace: str, lease_id: str, labels: Mapping[str, str]) -> LeaseRecord:
        """Create a lease (a generated id when ``lease_id`` is empty) with one
        conditional PUT. AlreadyExists ``lease "<id>"`` for a duplicate, InvalidArgument
        for oversize labels, a lease id over 4 KiB or a bad namespace."""
        validate_labels(labels)
        validate_lease_id(lease_id)
        lease = LeaseRecord(id=lease_id or new_lease_id(), created_at=utcnow(), labels=dict(labels))
        key = self.key(namespace, lease.id)
        body = self._encode(lease)
        try:
            self._bucket.put(key, body, if_none_match=True)
            return lease
        except errdefs.AlreadyExists:
            pass
        found = self._read(namespace, lease.id)
        try:
            if found is None:  # deleted meanwhile
                self._bucket.put(key, body, if_none_match=True)
            elif found[0].expired(utcnow()):
                self._bucket.put(key, body, if_match=found[1].etag)
            else:
                raise errdefs.AlreadyExists(f'lease "{lease.id}"')
        except (errdefs.AlreadyExists, errdefs.FailedPrecondition):
            raise errdefs.AlreadyExists(f'lease "{lease.id}"') from None
        return lease

    def delete(self, namespace: str, lease_id: str) -> None:
        """Delete a lease; NotFound ``lease "<id>"`` if there is none."""
        self.get(namespace, lease_id)
        self._bucket.delete(self.key(namespace, lease_id))

    def _edit(
        self, namespace: str, lease_id: str, fn: Callable[[LeaseRecord], LeaseRecord]
    ) -> LeaseRecord:
        """Apply ``fn`` (lease -> lease) with a conditional read-modify-write; the lease
        as written (or as it was when ``fn`` changed nothing). NotFound for an unknown
        or expired lease; Unavailable when changes keep colliding."""
        result: list[LeaseRecord] = []

        def change(found: tuple[bytes, ObjectInfo] | None) -> bytes | None:
            lease = None if found is None else self._decode(namespace, lease_id, found[0])
            if lease is None or lease.expired(utcnow()):
                raise errdefs.NotFound(f'lease "{lease_id}"')
            new = fn(lease)
            result[:] = [new]
            return None if new == lease else self._encode(new)

        self._bucket.change(
            self.key(namespace, lease_id), change, f'change lease "{lease_id}" of {namespace}'
        )
        return result[0]

    def add_resource(self, namespace: str, lease_id: str, rtype: str, rid: str) -> None:
        """Record a resource on a lease (idempotent; see :meth:`add_resources`)."""
        self.add_resources(namespace, lease_id, [(rtype, rid)])

    def add_resources(
        self, namespace: str, lease_id: str, resources: Sequence[tuple[str, str]]
    ) -> None:
        """Record several resources on a lease in one change (idempotent), then pass
        through the blob lock of each new ``content`` digest (see the module
        docstring). NotFound for an unknown lease, InvalidArgument for an unsupported
        resource (:func:`ingestq.store.leases.validate_resource`), Unavailable when
        changes keep colliding or a blob lock stays held."""
        for rtype, rid in resources:
            validate_resource(rtype, rid)
        added: list[tuple[str, str]] = []

        def add(lease: LeaseRecord) -> LeaseRecord:
            new = tuple(r for r in dict.fromkeys(resources) if r not in lease.resources)
            added[:] = new
            return replace(lease, resources=(*lease.resources, *new)) if new else lease

        self._edit(namespace, lease_id, add)
        if self._locker is None:
            return
        for rtype, rid in added:
            if rtype != "content":
                continue
            try:
                digest = Digest.parse(rid)
            except errdefs.InvalidArgument:
                continue  # names no blob
            with blob_lock(self._locker, digest):
                pass

    def delete_resource(self, namespace: str, lease_id: str, rtype: str, rid: str) -> None:
        """Forget a resource (absent is fine). NotFound for an unknown lease."""

        def drop(lease: LeaseRecord) -> LeaseRecord:
            kept = tuple(r for r in lease.resources if r != (rtype, rid))
            return replace(lease, resources=kept) if kept != lease.resources else lease

        self._edit(namespace, lease_id, drop)

    def prune_expired(
        self, namespace: str, now: datetime, *, dry_run: bool = False
    ) -> builtins.list[str]:
        """Delete the namespace's lease objects expired at ``now``; their ids, sorted
        (with ``dry_run``, only listed)."""
        expired = sorted(lease.id for lease in self._all(namespace) if lease.expired(now))
        if not dry_run:
            for lease_id in expired:
                self._bucket.delete(self.key(namespace, lease_id))
        return expired


__all__ = ["S3LeaseStore"]
