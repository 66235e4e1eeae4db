"""Garbage collection and usage of an S3 store: the mark and sweep of
:mod:`ingestq.store.gc` over a bucket, safe with writers and gc runs on other hosts.

The mark starts from the image records in the bucket's ``index.json`` (and the source
digest a view was recorded from), the unexpired leases in the bucket
(:mod:`ingestq.s3.leases`: every pull's job lease, every gRPC lease), blobs whose
labels make them roots (``containerd.io/gc.root``, an unexpired producer request), the
expected digests of the ingests kept, with the opt-in ``grace`` blobs committed within
it, and, for a lease naming an ingest whose record is gone (a gRPC commit in flight),
every blob committed since that lease was created. It follows
``containerd.io/gc.ref.content.*`` labels and the children of indexes and manifests
(read from the bucket, up to :data:`~ingestq.store.gc.MAX_MANIFEST_BYTES`).

**One run at a time per bucket prefix**: a run (not a dry one) first creates the lock
object ``<prefix>/locks/gc.json`` with ``If-None-Match: *`` (:class:`GcLock`). It names
its holder and its time to live (:data:`GC_LOCK_TTL`), renewed by a heartbeat with
``If-Match`` on its ETag; a second run meanwhile fails at once with Unavailable naming
the holder; a run finding an expired lock (its holder died) takes it over with
``If-Match``. Expiry is judged on the server's clock alone (the object's Last-Modified
against the ``Date`` of the response that read it, less a second for their whole-second
resolution), so a host whose clock is off neither steals a live lock nor keeps a dead
one, and a garbled lock body counts as holding the default time to live. A run that
loses its lock stops before its next delete (FailedPrecondition).

**The sweep follows the local gc's rule**, with the store's per-blob lock
(:mod:`ingestq.s3.bloblock`, taken through the store's locker: the Redis lease on
workers, so it excludes every host) in place of the local lock files: per batch of
candidates, it takes each candidate's blob lock (one held by a publish or a lease add is
skipped: kept for the next run), then reads the images and leases again and marks again,
then per blob reads its labels again and deletes the blob object and then its metadata
object unless they make it a root now. A publish writing labels holds the blob lock
through both PUTs, and adding ``content`` to a lease passes through it once written
(:mod:`ingestq.s3.leases`), so a writer that protects a digest on its lease and then
finds it committed finds a blob no gc deletes: a gc holding the lock finished its delete
first (and the writer sees the blob gone), any later one reads the lease. That needs the
gc to take the workers' locker (the periodic gc and ``ingestq gc`` do, with Redis
configured): every job lease names its lock domains, and a run whose locker shares none
of a live job's refuses (:func:`check_lock_domains`).

Ingests idle longer than ``ingest_max_age`` that no writer holds and no lease names are
aborted (their multipart upload, tail and record), and so are multipart uploads under the
prefix that no ingest record names and that were started longer ago than that; metadata
objects whose blob is gone and expired leases are deleted. Errors are the kinds of
:func:`ingestq.s3.errors.from_s3_error`; DataLoss for an unreadable ``index.json`` or
lease (nothing is deleted then).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ingestq import errdefs
from ingestq.s3.bloblock import try_blob_lock
from ingestq.s3.bucket import Bucket, ObjectInfo
from ingestq.s3.records import meta_from_bytes, record_from_bytes
from ingestq.s3.store import S3Store
from ingestq.store.annotations import SOURCE_DIGEST, SOURCE_MEDIA_TYPE
from ingestq.store.digest import Digest
from ingestq.store.gc import (
    JOB_LEASE_NAMESPACE,
    LOCKS_LABEL,
    REQUESTED_LABEL,
    ContentGraph,
    GcOptions,
    GcReport,
    GcRoots,
    Usage,
    add_lease_roots,
    image_usage,
    is_manifest_type,
    is_root,
    prune_leases,
)
from ingestq.store.layout import RootLayout
from ingestq.store.locks import Lease, lock_domains, new_holder_id
from ingestq.store.values import utcnow

#: Candidates per hold of their blob locks (writers of those digests wait meanwhile:
#: each delete is a few requests).
SWEEP_BATCH = 64
#: What a blob's commit time as listed (the server's clock, whole seconds) may lag.
LISTING_MARGIN = timedelta(seconds=2)
#: How long a run's lock object stays good without a renewal (its holder died), seconds.
GC_LOCK_TTL = 120.0
#: The longest time to live a lock object's body is believed to hold (a day).
MAX_LOCK_TTL = 86400.0


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


def _read_roots(store: S3Store, now: datetime) -> GcRoots:
    roots = GcRoots([(d, t) for _, d, t in _image_roots(store)])
    # A listed blob's time is the server's, in whole seconds: a margin.
    add_lease_roots(
        roots,
        store.leases(),
        now,
        lambda ref: store.bucket.head(store.location.ingest(ref)) is not None,
        LISTING_MARGIN,
    )
    return roots


def _graph(store: S3Store, blobs: Mapping[Digest, S3Blob]) -> ContentGraph:
    """Reachability over the listed blobs (manifests read from the bucket on demand)."""

    def read(digest: Digest) -> bytes:
        found = store.bucket.get_or_none(store.location.blob(digest))
        return found[0] if found is not None else b""

    return ContentGraph(blobs, read)


def _mark(
    graph: ContentGraph, roots: GcRoots, expected: Iterable[Digest], now: datetime, grace: timedelta
) -> set[Digest]:
    starts = list(roots.digests)
    starts.extend((d, "") for d in expected)
    cutoff = now - grace if grace > timedelta(0) else None
    for blob in graph.blobs.values():
        if (
            is_root(blob.labels, now)
            or (cutoff is not None and blob.created_at >= cutoff)
            or (roots.since is not None and blob.created_at >= roots.since)
        ):
            starts.append((blob.digest, ""))
    return graph.reach(starts)


def image_trees(store: S3Store) -> dict[str, set[Digest]]:
    """Per recorded image, every digest its tree reaches (committed or not)."""
    graph = _graph(store, scan_blobs(store))
    trees: dict[str, set[Digest]] = {}
    for name, digest, media_type in _image_roots(store):
        trees.setdefault(name, set()).update(graph.reach([(digest, media_type)]))
    return trees


class GcLock:
    """The lock object that makes gc runs on one bucket prefix exclude each other
    (``<prefix>/locks/gc.json``; see the module docstring). Use as a context manager:
    :meth:`acquire` on entry (Unavailable while another run holds it), a heartbeat
    thread renewing it every ``ttl / 3`` seconds, :meth:`release` on exit."""

    def __init__(self, store: S3Store, ttl: float = GC_LOCK_TTL) -> None:
        self._bucket: Bucket = store.bucket
        self.key = store.location.key("locks", "gc.json")
        self._where = str(store.location)
        self.ttl = ttl
        self.holder = new_holder_id()
        self._etag: str | None = None
        self._lost: errdefs.ErrdefsError | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        now = utcnow()
        return json.dumps(
            {
                "holder": self.holder,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "ttl": self.ttl,
                "renewed_at": now.isoformat(),
                "expires_at": (now + timedelta(seconds=self.ttl)).isoformat(),
            }
        ).encode()

    def acquire(self) -> None:
        """Create the lock object, or take over an expired one. Unavailable naming the
        holder and its expiry while another run holds it."""
        try:
            self._etag = self._bucket.put(self.key, self._body(), if_none_match=True)
            return
        except errdefs.AlreadyExists:
            pass
        found = self._bucket.read(self.key)
        if found is None:  # released meanwhile: one more try
            try:
                self._etag = self._bucket.put(self.key, self._body(), if_none_match=True)
                return
            except errdefs.AlreadyExists:
                found = self._bucket.read(self.key)
        held: dict[str, Any] = {}
        with contextlib.suppress(ValueError, TypeError):
            held = dict(json.loads(found[0])) if found is not None else {}
        until = _lock_expiry(held, found[1]) if found is not None else None
        if found is not None and until is not None and _lock_now(found[1]) >= until:
            try:
                self._etag = self._bucket.put(self.key, self._body(), if_match=found[1].etag)
                return
            except (errdefs.FailedPrecondition, errdefs.AlreadyExists):
                pass  # another run took it over first
        holder = str(held.get("holder", "another run"))
        raise errdefs.Unavailable(
            f"gc of {self._where} is running already: {self.key} is held by {holder} "
            f"until {until.isoformat() if until else '?'}",
            {"holder": holder, "key": self.key},
        )

    def renew(self) -> None:
        """Push the expiry ``ttl`` ahead. FailedPrecondition once the lock was lost (it
        expired and another run took it)."""
        with self._mutex:
            if self._lost is not None:
                raise self._lost
            try:
                self._etag = self._bucket.put(self.key, self._body(), if_match=self._etag)
            except (errdefs.FailedPrecondition, errdefs.NotFound) as e:
                self._lost = errdefs.FailedPrecondition(
                    f"gc of {self._where} lost its lock {self.key}: {e}"
                )
                raise self._lost from e

    def check(self) -> None:
        """FailedPrecondition if the heartbeat found the lock lost."""
        with self._mutex:
            if self._lost is not None:
                raise self._lost

    def release(self) -> None:
        """Stop the heartbeat and delete the lock object if it is still this run's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        with self._mutex:
            found = self._bucket.head(self.key)
            if self._lost is None and found is not None and found.etag == self._etag:
                self._bucket.delete(self.key)

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except errdefs.FailedPrecondition:
                return
            except errdefs.ErrdefsError:
                continue  # transient; the next beat tries again before the expiry

    def __enter__(self) -> GcLock:
        self.acquire()
        self._thread = threading.Thread(target=self._beat, name="ingestq-gc-lock", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_expiry(held: Mapping[str, Any], info: ObjectInfo) -> datetime:
    """When a lock object read as ``info`` expires, on the server's clock: its
    Last-Modified plus the holder's time to live (the default when the body names no
    valid one) plus a second for the whole-second resolution of both times."""
    raw = held.get("ttl")
    ttl = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else -1.0
    if not 0 <= ttl <= MAX_LOCK_TTL:
        ttl = GC_LOCK_TTL
    expiry: datetime = info.modified + timedelta(seconds=ttl + 1)
    return expiry


def _lock_now(info: ObjectInfo) -> datetime:
    """The server's time when it answered (this host's clock if it sent no Date)."""
    return info.served if info.served is not None else utcnow()


def check_lock_domains(store: S3Store, now: datetime) -> None:
    """FailedPrecondition when an unexpired job lease names lock domains
    (:data:`~ingestq.store.gc.LOCKS_LABEL`) that ``store.locker``'s do not meet: that
    job checks for blobs under locks this gc does not take, so a blob it found could
    be deleted under it (a pull on another host with a Redis or host lock this gc
    lacks). Leases without the label (made by other clients) are not judged."""
    ours = lock_domains(store.locker)
    foreign: dict[str, str] = {}
    for lease in store.leases().list(JOB_LEASE_NAMESPACE):
        theirs = frozenset(lease.labels.get(LOCKS_LABEL, "").split())
        if theirs and not theirs & ours and not lease.expired(now):
            foreign[lease.id] = " ".join(sorted(theirs))
    if foreign:
        jobs = ", ".join(f"{lid} ({where})" for lid, where in sorted(foreign.items())[:5])
        raise errdefs.FailedPrecondition(
            f"gc of {store.location}: {len(foreign)} job(s) hold leases under locks this "
            f"run does not share: {jobs}; run gc with their lock (INGESTQ_REDIS_URL or "
            f"INGESTQ_LOCK_URL of their Redis; it uses {' '.join(sorted(ours))}) "
            f"or once they are done{_why_foreign(ours, foreign.values())}",
            {"leases": ",".join(sorted(foreign))},
        )


def _why_foreign(ours: frozenset[str], theirs: Iterable[str]) -> str:
    """A hint for domains that differ though the Redis may be the same: a locker whose
    Redis refused INFO names a domain of its own; the same database under another run
    id is the same Redis restarted since those jobs began."""
    labels = " ".join(theirs).split()
    if any(d.startswith("object://") for d in labels):
        return (
            " (a job's locker named a domain of its own: its Redis user may be denied "
            "INFO, which ingestq needs: allow +info)"
        )
    ids = {d.split("/")[0] for d in ours if d.startswith("redis-db:")}
    if any(d.startswith("redis-db:") and d.split("/")[0] in ids for d in labels):
        return " (the same Redis restarted since those jobs began: their locks were lost)"
    return ""


def collect(store: S3Store, options: GcOptions | None = None) -> GcReport:
    """One gc run over ``store`` (see the module docstring): what was removed, or with
    ``options.dry_run`` what would be (a dry run takes no lock). Unavailable while
    another run holds the bucket's gc lock; FailedPrecondition when this run lost it or
    when a job's lease shows locks this run does not take (:func:`check_lock_domains`)."""
    options = options or GcOptions()
    with contextlib.nullcontext() if options.dry_run else GcLock(store) as lock:
        return _collect(store, options, lock)


def _collect(store: S3Store, options: GcOptions, lock: GcLock | None) -> GcReport:
    started = time.monotonic()
    now = utcnow()
    leases = prune_leases(store.leases(), options.dry_run, now)
    if not options.dry_run:
        check_lock_domains(store, now)
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
            batch = candidates[start : start + SWEEP_BATCH]
            if lock is not None:
                lock.check()
            with _blob_locks(store, batch) as locked:
                now = utcnow()
                # Again per batch: a job that began since, or a Redis restarted since
                # (this run's locks in it are gone), stops the run before its deletes.
                check_lock_domains(store, now)
                again = _mark(graph, _read_roots(store, now), expected, now, options.grace)
                for digest in locked:
                    if digest not in again and _delete_unless_rooted(store, digest, now):
                        removed.append((str(digest), blobs[digest].size))
        _sweep_orphan_meta(store)
    gone = {d for d, _ in removed}
    kept_blobs = [b for d, b in blobs.items() if str(d) not in gone]
    return GcReport(
        dry_run=options.dry_run,
        blobs=tuple(removed),
        ingests=tuple(removed_ingests),
        leases=tuple(leases),
        kept_blobs=len(kept_blobs),
        kept_bytes=sum(b.size for b in kept_blobs),
        seconds=time.monotonic() - started,
    )


@contextlib.contextmanager
def _blob_locks(store: S3Store, digests: Iterable[Digest]) -> Iterator[list[Digest]]:
    """Hold the blob lock of each of ``digests`` that is free now; yields those."""
    held: list[tuple[Digest, Lease]] = []
    try:
        for digest in digests:
            lease = try_blob_lock(store.locker, digest)
            if lease is not None:
                held.append((digest, lease))
        yield [d for d, _ in held]
    finally:
        for _, lease in reversed(held):
            lease.release()


def _delete_unless_rooted(store: S3Store, digest: Digest, now: datetime) -> bool:
    """Under the blob lock: delete the blob object, then its metadata, unless its labels
    (read again) make it a root now. Whether it was deleted."""
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


__all__ = [
    "GC_LOCK_TTL",
    "LISTING_MARGIN",
    "SWEEP_BATCH",
    "GcLock",
    "S3Blob",
    "S3Ingest",
    "check_lock_domains",
    "collect",
    "image_trees",
    "ingests",
    "scan_blobs",
    "usage",
]
