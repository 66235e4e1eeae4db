"""Garbage collection and usage of an S3 store: the mark and sweep of
:mod:`ingestq.store.gc` over a bucket.

The mark starts from the image records in the bucket's ``index.json`` (and the source
digest a view was recorded from), the host's leases under the store root, blobs whose
labels make them roots (``containerd.io/gc.root``, an unexpired producer request), blobs
committed within ``grace``, and the expected digests of the ingests kept; it follows
``containerd.io/gc.ref.content.*`` labels and the children of indexes and manifests
(read from the bucket, up to :data:`~ingestq.store.gc.MAX_MANIFEST_BYTES`).

The sweep deletes each unmarked blob object and then its metadata object, unless its
labels (read again) make it a root now; the image records are read again before each
batch, so an image recorded meanwhile keeps its blobs. Ingests idle longer than
``ingest_max_age`` that no writer holds are aborted (their multipart upload, tail and
record), and so are multipart uploads under the prefix that no ingest record names and
that were started longer ago than that; metadata objects whose blob is gone are deleted.

S3 has no lock the hosts share for a whole run: a pull in flight on another host
protects the blobs it has committed but not yet recorded in an image only through
``grace`` (``INGESTQ_GC_GRACE``), which should exceed the longest pull.
Errors are the kinds of :func:`ingestq.s3.errors.from_s3_error`; DataLoss for an
unreadable ``index.json`` (nothing is deleted then).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ingestq import errdefs
from ingestq.s3.records import meta_from_bytes, record_from_bytes
from ingestq.s3.store import S3Store
from ingestq.store.annotations import SOURCE_DIGEST, SOURCE_MEDIA_TYPE
from ingestq.store.digest import Digest
from ingestq.store.gc import (
    REQUESTED_LABEL,
    SWEEP_BATCH,
    ContentGraph,
    GcOptions,
    GcReport,
    Usage,
    image_usage,
    is_manifest_type,
    is_root,
)
from ingestq.store.layout import RootLayout
from ingestq.store.leases import LeaseStore
from ingestq.store.values import utcnow


@dataclass(frozen=True)
class S3Blob:
    """A committed blob as listed: digest, size, labels and commit time."""

    digest: Digest
    size: int
    labels: Mapping[str, str]
    created_at: datetime


@dataclass(frozen=True)
class S3Ingest:
    """An ingest record in the bucket: ref, bytes it holds, last activity, expected
    digest, and whether a writer holds it now."""

    ref: str
    size: int
    updated_at: datetime
    expected: Digest | None
    active: bool


def scan_blobs(store: S3Store) -> dict[Digest, S3Blob]:
    """Every committed blob under the prefix (one listing, one metadata read each)."""
    loc = store.location
    out: dict[Digest, S3Blob] = {}
    for obj in store.bucket.list_objects(loc.blobs):
        digest = loc.digest_of_blob_key(obj.key)
        if digest is None:
            continue
        labels: Mapping[str, str] = {}
        created = obj.modified
        found = store.bucket.get_or_none(loc.meta(digest))
        if found is not None:
            with contextlib.suppress(errdefs.ErrdefsError, ValueError, KeyError, TypeError):
                meta, _ = meta_from_bytes(found[0])
                labels, created = meta.labels, meta.created_at
        out[digest] = S3Blob(digest, obj.size, labels, created)
    return out


def ingests(store: S3Store) -> list[S3Ingest]:
    """Every ingest record under the prefix, sorted by ref."""
    out = []
    for obj in store.bucket.list_objects(store.location.ingests):
        if not obj.key.endswith(".json"):
            continue
        found = store.bucket.get_or_none(obj.key)
        if found is None:
            continue  # committed or aborted meanwhile
        rec = record_from_bytes(found[0])
        active = store.locker.holder(rec.ref) is not None
        out.append(S3Ingest(rec.ref, rec.persisted, rec.updated_at, rec.expected, active))
    return sorted(out, key=lambda i: i.ref)


@dataclass
class _Roots:
    digests: list[tuple[Digest, str]] = field(default_factory=list)
    ingest_refs: set[str] = field(default_factory=set)


def _image_roots(store: S3Store) -> list[tuple[str, Digest, str]]:
    out = []
    for name, desc in store.image_index().list():
        out.append((name, desc.digest, _start_type(desc.media_type)))
        source = desc.annotations.get(SOURCE_DIGEST)
        if source:
            with contextlib.suppress(errdefs.InvalidArgument):
                media_type = desc.annotations.get(SOURCE_MEDIA_TYPE, "")
                out.append((name, Digest.parse(source), _start_type(media_type)))
    return out


def _start_type(media_type: str) -> str:
    # An image's root is read as JSON even when its type is unknown ("?").
    return media_type if is_manifest_type(media_type) else "?"


def _read_roots(store: S3Store, now: datetime) -> _Roots:
    roots = _Roots([(d, t) for _, d, t in _image_roots(store)])
    leases = LeaseStore(store.root)
    for ns in leases.namespaces():
        for lease in leases.list(ns):
            if lease.expired(now):
                continue
            for rtype, rid in lease.resources:
                if rtype == "content":
                    with contextlib.suppress(errdefs.InvalidArgument):
                        roots.digests.append((Digest.parse(rid), ""))
                elif rtype == "ingests":
                    roots.ingest_refs.add(rid)
    return roots


def _graph(store: S3Store, blobs: Mapping[Digest, S3Blob]) -> ContentGraph:
    """Reachability over the listed blobs (manifests read from the bucket on demand)."""

    def read(digest: Digest) -> bytes:
        found = store.bucket.get_or_none(store.location.blob(digest))
        return found[0] if found is not None else b""

    return ContentGraph(blobs, read)


def _mark(
    graph: ContentGraph, roots: _Roots, expected: Iterable[Digest], now: datetime, grace: timedelta
) -> set[Digest]:
    starts = list(roots.digests)
    starts.extend((d, "") for d in expected)
    cutoff = now - grace if grace > timedelta(0) else None
    for blob in graph.blobs.values():
        if is_root(blob.labels, now) or (cutoff is not None and blob.created_at >= cutoff):
            starts.append((blob.digest, ""))
    return graph.reach(starts)


def image_trees(store: S3Store) -> dict[str, set[Digest]]:
    """Per recorded image, every digest its tree reaches (committed or not)."""
    graph = _graph(store, scan_blobs(store))
    trees: dict[str, set[Digest]] = {}
    for name, digest, media_type in _image_roots(store):
        trees.setdefault(name, set()).update(graph.reach([(digest, media_type)]))
    return trees


def collect(store: S3Store, options: GcOptions | None = None) -> GcReport:
    """One gc run over ``store`` (see the module docstring): what was removed, or with
    ``options.dry_run`` what would be."""
    options = options or GcOptions()
    started = time.monotonic()
    now = utcnow()
    removed_ingests, kept = _sweep_ingests(store, options, now)
    blobs = scan_blobs(store)
    graph = _graph(store, blobs)
    expected = [i.expected for i in kept if i.expected is not None]
    marked = _mark(graph, _read_roots(store, now), expected, now, options.grace)
    candidates = sorted((d for d in blobs if d not in marked), key=str)
    removed: list[tuple[str, int]] = []
    if options.dry_run:
        removed = [(str(d), blobs[d].size) for d in candidates]
    else:
        for start in range(0, len(candidates), SWEEP_BATCH):
            now = utcnow()
            again = _mark(graph, _read_roots(store, now), expected, now, options.grace)
            for digest in candidates[start : start + SWEEP_BATCH]:
                if digest not in again and _delete_unless_rooted(store, digest, now):
                    removed.append((str(digest), blobs[digest].size))
        _sweep_orphan_meta(store)
    gone = {d for d, _ in removed}
    kept_blobs = [b for d, b in blobs.items() if str(d) not in gone]
    return GcReport(
        dry_run=options.dry_run,
        blobs=tuple(removed),
        ingests=tuple(removed_ingests),
        kept_blobs=len(kept_blobs),
        kept_bytes=sum(b.size for b in kept_blobs),
        seconds=time.monotonic() - started,
    )


def _delete_unless_rooted(store: S3Store, digest: Digest, now: datetime) -> bool:
    """Delete the blob object, then its metadata, unless its labels (read again) make it
    a root now. Whether it was deleted."""
    loc = store.location
    found = store.bucket.get_or_none(loc.meta(digest))
    if found is not None:
        with contextlib.suppress(errdefs.ErrdefsError, ValueError, KeyError, TypeError):
            meta, _ = meta_from_bytes(found[0])
            if is_root(meta.labels, now):
                return False
    if store.bucket.head(loc.blob(digest)) is None:
        return False
    store.bucket.delete(loc.blob(digest))
    store.bucket.delete(loc.meta(digest))
    return True


def _sweep_orphan_meta(store: S3Store) -> None:
    loc = store.location
    for obj in store.bucket.list_objects(loc.key("meta") + "/"):
        name = obj.key[len(loc.key("meta")) + 1 :]
        if not name.endswith(".json"):
            continue
        with contextlib.suppress(errdefs.InvalidArgument):
            digest = Digest.parse(name[: -len(".json")].replace("/", ":", 1))
            if store.bucket.head(loc.blob(digest)) is None:
                store.bucket.delete(obj.key)


def _sweep_ingests(
    store: S3Store, options: GcOptions, now: datetime
) -> tuple[list[tuple[str, int]], list[S3Ingest]]:
    """Abort idle ingests nobody holds, then stray multipart uploads; (removed, kept)."""
    cutoff = now - options.ingest_max_age
    leased = _read_roots(store, now).ingest_refs
    removed: list[tuple[str, int]] = []
    kept: list[S3Ingest] = []
    named: set[str] = set()
    for ingest in ingests(store):
        idle = ingest.updated_at < cutoff and not ingest.active and ingest.ref not in leased
        if idle and options.dry_run:
            removed.append((ingest.ref, ingest.size))
            continue
        if idle:
            try:
                store.abort(ingest.ref)
                removed.append((ingest.ref, ingest.size))
                continue
            except (errdefs.NotFound, errdefs.Unavailable):
                pass  # gone or taken meanwhile
        kept.append(ingest)
    for ingest in kept:
        rec = store._record(ingest.ref)
        if rec is not None and rec.upload is not None:
            named.add(rec.upload.id)
    for key, upload, initiated in store.bucket.uploads_started(store.location.key("")):
        if upload in named or initiated >= cutoff:
            continue
        if not options.dry_run:
            store.bucket.abort_upload(key, upload)
        removed.append((f"upload:{key}", 0))
    return removed, kept


def usage(store: S3Store, reclaimable: GcReport) -> Usage:
    """What the bucket holds now (listings), with ``reclaimable`` (a dry run of
    :func:`collect`, to which the jobs layer adds its records)."""
    blobs = scan_blobs(store)
    graph = _graph(store, blobs)
    trees: dict[str, set[Digest]] = {}
    for name, digest, media_type in _image_roots(store):
        trees.setdefault(name, set()).update(graph.reach([(digest, media_type)]))
    images = image_usage(trees, {d: b.size for d, b in blobs.items()})
    requested = [b for b in blobs.values() if REQUESTED_LABEL in b.labels]
    partial = ingests(store)
    records = [p for p in RootLayout(store.root).jobs.glob("*.json") if p.is_file()]
    return Usage(
        blobs=len(blobs),
        bytes=sum(b.size for b in blobs.values()),
        images=tuple(images),
        requested_blobs=len(requested),
        requested_bytes=sum(b.size for b in requested),
        partial_ingests=len(partial),
        partial_bytes=sum(p.size for p in partial),
        oldest_partial=min((p.updated_at for p in partial), default=None),
        job_records=len(records),
        job_record_bytes=sum(p.stat().st_size for p in records),
        reclaimable=reclaimable,
    )


__all__ = ["S3Blob", "S3Ingest", "collect", "image_trees", "ingests", "scan_blobs", "usage"]
