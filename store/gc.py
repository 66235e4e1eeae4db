"""Garbage collection of a store root: containerd's mark and sweep, plus the
disk-usage view and the image check built on the same reachability walk.

**Roots** (what is kept, with everything it reaches):

* every image recorded in ``index.json`` (its target, and the source manifest named by
  :data:`~ingestq.store.annotations.SOURCE_DIGEST` when it is recorded through a view);
* every unexpired lease, gRPC or a job's (its ``content`` resources; its ``ingests``
  resources keep those ingests);
* blobs labelled ``containerd.io/gc.root``;
* blobs a producer asked for: labelled :data:`REQUESTED_LABEL` ``never``, or an
  RFC 3339 time that has not passed (``ingestq ingest --expire``);
* the expected digests of the ingests that are kept;
* with the opt-in ``grace`` only, blobs committed less than ``grace`` ago.

**Edges**: ``containerd.io/gc.ref.content.*`` labels, plus the children named by a
reachable index or manifest (config, layers, manifests, blobs), read as plain JSON.

**Sweep**: unreachable blobs (file and metadata), partial ingests idle longer than
``ingest_max_age`` whose ref lock is free and that no lease names, resume hints whose
ingest is gone, expired leases, and temporary files of atomic writes left by a writer
killed before its rename (:func:`ingestq.store.atomic.sweep_temp_files`), once idle
for ``ingest_max_age`` and at least :data:`~ingestq.store.atomic.TEMP_MIN_AGE`, and blobs
moved to ``quarantine/`` (found damaged on disk) longer than ``quarantine_max_age`` ago.

**Concurrency** (no time-based grace by default): a writer protects a blob *before*
it checks for it or commits it: a pull adds the digest to its lease first
(:class:`JobLease`), a plain ingest commits the blob with its :data:`REQUESTED_LABEL`
(written under the blob lock, atomically with the publish), an image record goes to
``index.json`` before the pull's lease is dropped. Deleting runs in batches; each batch
holds the ``index.json`` lock and the leases lock (every lease change takes it, see
:mod:`store.leases`), re-reads the images and leases under them and marks again, then
takes each candidate's blob lock (the lock publishing takes), re-reads that blob's
labels and only then unlinks it. So a lease resource or image added before the batch
is seen, one added after it is added to a store where the blob is already gone (the
writer's existence check then fetches it again), and a publish either finished before
the blob lock (its labels are read) or starts after the unlink. A gRPC Write under a
lease whose commit is in flight (the lease still names the ingest but the ingest
directory is gone) keeps every blob committed since that lease was created.
A ``containerd.io/gc.ref.content.*`` label added to a kept blob while a run is going
protects its target from the next run on (writers hold a lease meanwhile, as ``ctr``
does). Killed at any point, a run leaves blobs that are whole or gone; the next run
finishes the job (a metadata file without its blob is removed too).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from ingestq import errdefs
from ingestq.store import quarantine
from ingestq.store.annotations import SOURCE_DIGEST, SOURCE_MEDIA_TYPE
from ingestq.store.atomic import sweep_temp_files
from ingestq.store.codec import BlobMeta
from ingestq.store.digest import ALGORITHMS, Digest
from ingestq.store.expiry import NEVER, REQUESTED_LABEL, parse_duration, requested_labels
from ingestq.store.images import ImageIndex
from ingestq.store.layout import RootLayout
from ingestq.store.leases import EXPIRE_LABEL, LeaseReader, LeaseRecord, Leases, leases_lock
from ingestq.store.local.blobs import check_attributes_readable, read_blob_meta
from ingestq.store.local.ingest import IngestDir
from ingestq.store.local.store import LocalStore
from ingestq.store.lockfile import LockFile, held
from ingestq.store.locks import new_holder_id
from ingestq.store.oserrors import from_os_error
from ingestq.store.ownfiles import open_own, read_record, remove_tree
from ingestq.store.values import utcnow

log = logging.getLogger(__name__)

#: containerd's label that makes a blob a root.
GC_ROOT_LABEL = "containerd.io/gc.root"
#: Prefix of containerd's labels naming a blob's children.
GC_REF_PREFIX = "containerd.io/gc.ref.content."
#: The lease namespace of ingestq's own jobs.
JOB_LEASE_NAMESPACE = "ingestq"
#: How long a job's lease outlives a crashed job (its ``containerd.io/gc.expire``).
JOB_LEASE_TTL = timedelta(hours=24)
#: The job lease label naming the lock domains its job's blob locks live in.
LOCKS_LABEL = "ingestq.locks"
#: Default idle age after which a partial ingest is swept (containerd's 24 h).
DEFAULT_INGEST_MAX_AGE = timedelta(hours=24)
#: How long a damaged blob stays in ``quarantine/`` for inspection.
DEFAULT_QUARANTINE_MAX_AGE = timedelta(days=7)
#: Largest index or manifest the walk reads (as the fetch layer's limit).
MAX_MANIFEST_BYTES = 4 << 20
#: Candidates deleted per hold of the index and leases locks.
SWEEP_BATCH = 256

_INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
_MANIFEST_TYPES = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    }
)


def _parse_time(text: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def is_root(labels: Mapping[str, str], now: datetime) -> bool:
    """Whether a blob with ``labels`` is a root by itself: ``containerd.io/gc.root``, or
    asked for by a producer and not expired (an unreadable expiry keeps it)."""
    if GC_ROOT_LABEL in labels:
        return True
    value = labels.get(REQUESTED_LABEL)
    if value is None:
        return False
    if value == NEVER:
        return True
    at = _parse_time(value)
    return at is None or at > now


def label_children(labels: Mapping[str, str]) -> list[Digest]:
    """The digests ``containerd.io/gc.ref.content.*`` labels name (malformed ones skipped)."""
    out = []
    for key, value in labels.items():
        if key.startswith(GC_REF_PREFIX):
            with contextlib.suppress(errdefs.InvalidArgument):
                out.append(Digest.parse(value))
    return out


def json_children(data: bytes) -> list[tuple[Digest, str]]:
    """The (digest, media type) children an index or manifest names: ``manifests``,
    ``config``, ``layers`` and ``blobs`` entries. Empty for anything that is not such
    a JSON document."""
    try:
        doc: Any = json.loads(data)
    except ValueError:
        return []
    if not isinstance(doc, dict):
        return []
    entries: list[Any] = []
    for key in ("manifests", "layers", "blobs"):
        value = doc.get(key)
        if isinstance(value, list):
            entries.extend(value)
    if isinstance(doc.get("config"), dict):
        entries.append(doc["config"])
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            continue
        with contextlib.suppress(errdefs.InvalidArgument):
            media_type = entry.get("mediaType")
            out.append((Digest.parse(entry["digest"]), str(media_type or "")))
    return out


def is_manifest_type(media_type: str) -> bool:
    """Whether ``media_type`` is an index or image manifest (a walk reads its children)."""
    return media_type in _INDEX_TYPES or media_type in _MANIFEST_TYPES


@dataclass(frozen=True)
class GcOptions:
    """What a run collects. ``grace`` (default none) keeps blobs committed less than
    that long ago; ``ingest_max_age`` is the idle age after which a partial ingest goes;
    ``quarantine_max_age`` how long a damaged blob moved aside is kept."""

    dry_run: bool = False
    ingest_max_age: timedelta = DEFAULT_INGEST_MAX_AGE
    grace: timedelta = timedelta(0)
    quarantine_max_age: timedelta = DEFAULT_QUARANTINE_MAX_AGE


@dataclass(frozen=True)
class GcReport:
    """What a run removed (or, dry, would remove): blobs and partial ingests (name,
    bytes), resume hints and temporary files (counts), quarantined entries (name, bytes
    held), leases (ids). ``job_records`` is filled by the jobs layer, which owns them."""

    dry_run: bool
    blobs: tuple[tuple[str, int], ...] = ()
    ingests: tuple[tuple[str, int], ...] = ()
    resume_hints: int = 0
    temp_files: int = 0
    quarantined: tuple[tuple[str, int], ...] = ()
    leases: tuple[str, ...] = ()
    job_records: int = 0
    kept_blobs: int = 0
    kept_bytes: int = 0
    seconds: float = 0.0

    @property
    def bytes(self) -> int:
        """Bytes of the blobs removed."""
        return sum(size for _, size in self.blobs)

    @property
    def ingest_bytes(self) -> int:
        """Bytes of the partial ingests removed."""
        return sum(size for _, size in self.ingests)

    @property
    def quarantine_bytes(self) -> int:
        """Bytes of the quarantined files removed."""
        return sum(size for _, size in self.quarantined)

    def to_json(self) -> dict[str, Any]:
        """A JSON object (``ingestq gc --json``)."""
        return {
            "dry_run": self.dry_run,
            "blobs": [{"digest": d, "size": s} for d, s in self.blobs],
            "bytes": self.bytes,
            "ingests": [{"ref": r, "size": s} for r, s in self.ingests],
            "ingest_bytes": self.ingest_bytes,
            "resume_hints": self.resume_hints,
            "temp_files": self.temp_files,
            "quarantined": [{"name": n, "size": s} for n, s in self.quarantined],
            "quarantine_bytes": self.quarantine_bytes,
            "leases": list(self.leases),
            "job_records": self.job_records,
            "kept_blobs": self.kept_blobs,
            "kept_bytes": self.kept_bytes,
            "seconds": round(self.seconds, 6),
        }


@dataclass(frozen=True)
class BlobFile:
    """A committed blob as found on disk: digest, size, labels and commit time."""

    digest: Digest
    size: int
    labels: Mapping[str, str]
    created_at: datetime


def scan_blobs(layout: RootLayout) -> dict[Digest, BlobFile]:
    """Every committed blob under ``blobs/`` with its size and metadata (entries that are
    not digests, or not regular files, are skipped: gc neither follows nor removes a
    link, a directory or a FIFO planted there)."""
    out: dict[Digest, BlobFile] = {}
    for alg in sorted(ALGORITHMS):
        try:
            entries = list(os.scandir(layout.blob_dir(alg)))
        except FileNotFoundError:
            continue
        except OSError as e:
            raise from_os_error(e, f"list {layout.blob_dir(alg)}") from e
        for entry in entries:
            try:
                digest = Digest(alg, entry.name)
                st = entry.stat(follow_symlinks=False)
            except (errdefs.InvalidArgument, FileNotFoundError):
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            meta = read_blob_meta(layout, digest, path=entry.path)
            out[digest] = _blob_file(digest, st.st_size, st.st_mtime, meta)
    return out


def _temp_dirs(layout: RootLayout) -> list[Path]:
    """The directories whose files are written through a temporary file, but for
    ``ingest/`` (partial ingests are swept whole) and ``jobs/`` (the jobs layer prunes
    its records and their temporary files)."""
    dirs = [layout.root, layout.meta, layout.resume, layout.fetched, layout.leases]
    dirs += [layout.meta / alg for alg in sorted(ALGORITHMS)]
    dirs += [layout.blob_dir(alg) for alg in sorted(ALGORITHMS)]
    return dirs


def _blob_file(digest: Digest, size: int, mtime: float, meta: BlobMeta | None) -> BlobFile:
    if meta is None:
        return BlobFile(digest, size, {}, datetime.fromtimestamp(mtime, UTC))
    return BlobFile(digest, size, meta.labels, meta.created_at)


@dataclass
class GcRoots:
    """The roots found in one read of a store's images, leases and ingests: the
    (digest, media type) starts of the mark, the refs of leased ingests, and the time
    at or after which every committed blob is kept (a leased commit in flight)."""

    digests: list[tuple[Digest, str]] = field(default_factory=list)
    ingest_refs: set[str] = field(default_factory=set)
    since: datetime | None = None


def _image_roots(layout: RootLayout) -> Iterator[tuple[str, Digest, str]]:
    if not layout.index.exists():
        # Opening the index would create it under the index lock, which gc may hold.
        raise errdefs.DataLoss(f"{layout.index} is missing")
    for name, desc in ImageIndex(layout.root).list():
        yield name, desc.digest, desc.media_type
        source = desc.annotations.get(SOURCE_DIGEST)
        if source:
            with contextlib.suppress(errdefs.InvalidArgument):
                yield name, Digest.parse(source), desc.annotations.get(SOURCE_MEDIA_TYPE, "")


def live_leases(leases: LeaseReader) -> list[LeaseRecord]:
    """Every unexpired lease of every namespace (gc's lease roots, for every store)."""
    out: list[LeaseRecord] = []
    for ns in leases.namespaces():
        out.extend(leases.list(ns))
    return out


def add_lease_roots(
    roots: GcRoots,
    leases: LeaseReader,
    now: datetime,
    has_ingest: Callable[[str], bool],
    margin: timedelta = timedelta(0),
) -> None:
    """Add the resources of every unexpired lease to ``roots``: its content digests as
    starts, its ingest refs as kept ingests. A leased ref for which ``has_ingest`` is
    false is a commit in flight whose blob is not on the lease yet, so blobs committed
    since the lease was made (less ``margin``, for listings with coarse times) are kept."""
    for lease in live_leases(leases):
        if lease.expired(now):
            continue
        for rtype, rid in lease.resources:
            if rtype == "content":
                with contextlib.suppress(errdefs.InvalidArgument):
                    roots.digests.append((Digest.parse(rid), ""))
            elif rtype == "ingests":
                roots.ingest_refs.add(rid)
                since = lease.created_at - margin
                if (roots.since is None or since < roots.since) and not has_ingest(rid):
                    roots.since = since


def _read_roots(store: LocalStore, now: datetime) -> GcRoots:
    layout = store.layout
    roots = GcRoots([(digest, media_type) for _, digest, media_type in _image_roots(layout)])
    add_lease_roots(roots, store.leases(), now, lambda ref: layout.ingest_dir(ref).is_dir())
    return roots


class ListedBlob(Protocol):
    """A committed blob as a gc run sees it (a file here, an object in a bucket)."""

    @property
    def digest(self) -> Digest: ...

    @property
    def size(self) -> int: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def created_at(self) -> datetime: ...


class ContentGraph:
    """Reachability over listed blobs: labels cached, manifests read on demand through
    ``read`` (the blob's bytes, ``b""`` when it is gone); shared by every store's gc."""

    def __init__(self, blobs: Mapping[Digest, ListedBlob], read: Callable[[Digest], bytes]) -> None:
        self.blobs = blobs
        self._read = read
        self._children: dict[Digest, list[tuple[Digest, str]]] = {}

    def children(self, digest: Digest, media_type: str) -> list[tuple[Digest, str]]:
        """What ``digest`` references: its labels' targets and, for an index or
        manifest (or a blob of unknown type reached from an image), its JSON children."""
        blob = self.blobs.get(digest)
        out = [(d, "") for d in label_children(blob.labels)] if blob is not None else []
        if blob is None or not (is_manifest_type(media_type) or media_type == "?"):
            return out
        if digest not in self._children:
            small = blob.size <= MAX_MANIFEST_BYTES
            if not small and is_manifest_type(media_type):
                # Its references cannot be known: deleting what it might name is worse
                # than stopping.
                raise errdefs.DataLoss(
                    f"gc: {media_type} {digest} is {blob.size} bytes, more than gc reads "
                    f"({MAX_MANIFEST_BYTES}): its references cannot be known; remove it "
                    f"(and its image) or the store keeps growing"
                )
            self._children[digest] = json_children(self._read(digest)) if small else []
        return out + self._children[digest]

    def reach(self, starts: Iterable[tuple[Digest, str]]) -> set[Digest]:
        """Every digest reachable from ``starts`` (the starts included)."""
        seen: set[Digest] = set()
        stack = list(starts)
        while stack:
            digest, media_type = stack.pop()
            if digest in seen:
                continue
            seen.add(digest)
            stack.extend(self.children(digest, media_type))
        return seen


def _graph(layout: RootLayout, blobs: Mapping[Digest, BlobFile]) -> ContentGraph:
    def read(digest: Digest) -> bytes:
        # A manifest gc cannot read might name blobs it would then delete: it stops.
        what = f"gc: read {digest} for its references"
        return read_record(layout.blob(digest), MAX_MANIFEST_BYTES, what) or b""

    return ContentGraph(blobs, read)


def _image_start(digest: Digest, media_type: str) -> tuple[Digest, str]:
    # An image's root is read as JSON even when its type is unknown ("?").
    return digest, media_type if is_manifest_type(media_type) else "?"


def _mark(
    graph: ContentGraph,
    roots: GcRoots,
    ingest_digests: Iterable[Digest],
    now: datetime,
    grace: timedelta,
) -> set[Digest]:
    starts = [_image_start(d, t) if t else (d, "") for d, t in roots.digests]
    starts.extend((d, "") for d in ingest_digests)
    cutoff = None
    if grace > timedelta(0):
        try:
            cutoff = now - grace
        except OverflowError:  # a grace of millennia: every blob is recent
            cutoff = datetime.min.replace(tzinfo=UTC)
    for blob in graph.blobs.values():
        if (
            is_root(blob.labels, now)
            or (cutoff is not None and blob.created_at >= cutoff)
            or (roots.since is not None and blob.created_at >= roots.since)
        ):
            starts.append((blob.digest, ""))
    return graph.reach(starts)


@contextlib.contextmanager
def _locked(*paths: Path) -> Iterator[None]:
    with held(*paths, what="lock the store for gc"):
        try:
            yield
        except OSError as e:
            raise from_os_error(e, "gc under the store's locks") from e


def _dir_usage(path: Path) -> tuple[int, float]:
    """Bytes under ``path`` (one level) and the latest modification time in it."""
    size, latest = 0, 0.0
    try:
        latest = path.stat().st_mtime
        for entry in os.scandir(path):
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                size += st.st_size if entry.is_file(follow_symlinks=False) else 0
                latest = max(latest, st.st_mtime)
    except OSError:
        pass
    return size, latest


@dataclass(frozen=True)
class PartialIngest:
    """A partial ingest on disk: its ref (None when incomplete), bytes, last activity,
    expected digest, and whether a writer holds it now."""

    key: str
    ref: str | None
    size: int
    updated_at: float
    expected: Digest | None
    active: bool


def partial_ingests(store: LocalStore) -> list[PartialIngest]:
    """Every ingest directory under the root."""
    out = []
    try:
        names = sorted(os.listdir(store.layout.ingest))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise from_os_error(e, "list ingests") from e
    for name in names:
        ingest = IngestDir(store.layout.ingest / name)
        try:
            ref = ingest.read_ref()
            expected = ingest.expected()
        except OSError:
            continue  # not readable by this user: never removed, not counted
        size, latest = _dir_usage(ingest.path)
        active = ref is not None and store.locker.holder(ref) is not None
        out.append(PartialIngest(name, ref, size, latest, expected, active))
    return out


def collect(store: LocalStore, options: GcOptions | None = None) -> GcReport:
    """One gc run over ``store`` (see the module docstring): the report of what was
    removed, or with ``options.dry_run`` what would be. Raises DataLoss for an
    unreadable ``index.json`` or lease record (nothing is deleted then), PermissionDenied
    / ResourceExhausted (or another kind) when a lock file cannot be taken;
    FailedPrecondition when blobs carry labels as extended attributes this host cannot
    read (:func:`ingestq.store.local.blobs.check_attributes_readable`)."""
    options = options or GcOptions()
    started = time.monotonic()
    layout = store.layout
    check_attributes_readable(layout)
    now = utcnow()
    leases = prune_leases(store.leases(), options.dry_run, now)
    ingests, kept_ingests = _sweep_ingests(store, options, now, _read_roots(store, now).ingest_refs)
    hints = _sweep_hints(layout, options.dry_run)
    blobs = scan_blobs(layout)
    idle_since = now.timestamp() - options.ingest_max_age.total_seconds()
    temps = sum(
        sweep_temp_files(d, idle_since, dry_run=options.dry_run) for d in _temp_dirs(layout)
    )
    quarantined = _sweep_quarantine(
        layout, now.timestamp() - options.quarantine_max_age.total_seconds(), options.dry_run
    )
    graph = _graph(layout, blobs)
    expected = [i.expected for i in kept_ingests if i.expected is not None]
    marked = _mark(graph, _read_roots(store, now), expected, now, options.grace)
    candidates = sorted((d for d in blobs if d not in marked), key=str)
    if options.dry_run:
        removed = [(str(d), blobs[d].size) for d in candidates]
    else:
        removed = _sweep_blobs(store, graph, candidates, expected, options.grace)
        _sweep_orphan_meta(layout, blobs)
    gone = {d for d, _ in removed}
    kept = [b for d, b in blobs.items() if str(d) not in gone]
    return GcReport(
        dry_run=options.dry_run,
        blobs=tuple(removed),
        ingests=tuple(ingests),
        resume_hints=hints,
        temp_files=temps,
        quarantined=tuple(quarantined),
        leases=tuple(leases),
        kept_blobs=len(kept),
        kept_bytes=sum(b.size for b in kept),
        seconds=time.monotonic() - started,
    )


def _sweep_blobs(
    store: LocalStore,
    graph: ContentGraph,
    candidates: list[Digest],
    expected: list[Digest],
    grace: timedelta,
) -> list[tuple[str, int]]:
    layout = store.layout
    removed: list[tuple[str, int]] = []
    for start in range(0, len(candidates), SWEEP_BATCH):
        batch = candidates[start : start + SWEEP_BATCH]
        with _locked(layout.index_lock, leases_lock(layout)):
            now = utcnow()
            marked = _mark(graph, _read_roots(store, now), expected, now, grace)
            for digest in batch:
                if digest in marked:
                    continue
                size = _delete_unless_rooted(store, digest, now)
                if size is not None:
                    removed.append((str(digest), size))
    return removed


def _delete_unless_rooted(store: LocalStore, digest: Digest, now: datetime) -> int | None:
    """Under the blob lock: unlink the blob, then its metadata, unless its labels (read
    again) make it a root now. The bytes removed, or None when kept or already gone."""
    layout = store.layout
    with store.blobs.lock(digest):
        path = layout.blob(digest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        except OSError as e:
            raise from_os_error(e, f"stat content {digest}") from e
        meta = read_blob_meta(layout, digest)
        if meta is not None and is_root(meta.labels, now):
            return None
        try:
            path.unlink()
            layout.blob_meta(digest).unlink(missing_ok=True)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise from_os_error(e, f"delete {digest}") from e
    return size


def _sweep_orphan_meta(layout: RootLayout, blobs: Mapping[Digest, BlobFile]) -> None:
    """Metadata files whose blob is gone (a run killed between the two unlinks)."""
    for alg in sorted(ALGORITHMS):
        try:
            names = os.listdir(layout.meta / alg)
        except OSError:
            continue
        for name in names:
            encoded = name.removesuffix(".json")
            try:
                digest = Digest(alg, encoded)
            except errdefs.InvalidArgument:
                continue
            if digest in blobs or layout.blob(digest).exists():
                continue
            lock = LockFile(layout.blob_lock(digest))
            # Publishing writes the metadata first, under this lock: never race it.
            if not lock.acquire(blocking=False):
                continue
            try:
                if not layout.blob(digest).exists():
                    layout.blob_meta(digest).unlink(missing_ok=True)
            except OSError:
                pass
            finally:
                lock.release()


def prune_leases(leases: Leases, dry_run: bool, now: datetime) -> list[str]:
    """Remove the leases expired at ``now`` in every namespace; ``<namespace>/<id>`` of
    each (with ``dry_run``, only listed)."""
    out: list[str] = []
    for ns in leases.namespaces():
        out.extend(f"{ns}/{lid}" for lid in leases.prune_expired(ns, now, dry_run=dry_run))
    return out


def _sweep_ingests(
    store: LocalStore, options: GcOptions, now: datetime, leased: set[str]
) -> tuple[list[tuple[str, int]], list[PartialIngest]]:
    removed: list[tuple[str, int]] = []
    kept: list[PartialIngest] = []
    cutoff = now.timestamp() - options.ingest_max_age.total_seconds()
    for ingest in partial_ingests(store):
        idle = ingest.updated_at < cutoff
        if ingest.active or not idle or (ingest.ref is not None and ingest.ref in leased):
            kept.append(ingest)
            continue
        name = ingest.ref if ingest.ref is not None else f"(incomplete {ingest.key[:12]})"
        if options.dry_run:
            removed.append((name, ingest.size))
            continue
        if _remove_ingest(store, ingest):
            removed.append((name, ingest.size))
        else:
            kept.append(ingest)
    return removed, kept


def _remove_ingest(store: LocalStore, ingest: PartialIngest) -> bool:
    path = store.layout.ingest / ingest.key
    if ingest.ref is None:
        remove_tree(path)
        return True
    try:
        lease = store.locker.try_lock(ingest.ref, new_holder_id())
    except errdefs.Unavailable:
        return False  # a writer took it meanwhile
    try:
        _, latest = _dir_usage(path)
        if latest > ingest.updated_at:
            return False
        remove_tree(path)
        return True
    finally:
        lease.release()


def _sweep_quarantine(layout: RootLayout, before: float, dry_run: bool) -> list[tuple[str, int]]:
    """Entries of ``quarantine/`` moved there before ``before`` (a Unix time; judged by
    their ctime, set by the rename that moved them, which cannot be backdated): removed,
    never followed (:mod:`store.quarantine`). Returns their names and the bytes they
    held. One that cannot be removed (a planted tree too deep) is logged and kept."""
    out: list[tuple[str, int]] = []
    try:
        with quarantine.opened(layout.quarantine) as fd:
            if fd is None:
                return out
            for name, st in sorted(quarantine.entries(fd)):
                if st.st_ctime >= before:
                    continue
                if not dry_run:
                    try:
                        quarantine.remove(fd, name, st)
                    except OSError as e:
                        log.warning("gc: cannot remove quarantine/%s: %s", name, e)
                        continue
                out.append((name, quarantine.held_bytes(st)))
    except OSError as e:
        log.warning("gc: cannot read quarantine/: %s", e)
    return out


def _sweep_hints(layout: RootLayout, dry_run: bool) -> int:
    """Resume hints whose ingest directory is gone (they are advisory: at worst a later
    resume of that ref restarts from 0)."""
    try:
        names = os.listdir(layout.resume)
    except OSError:
        return 0
    count = 0
    for name in names:
        if not name.endswith(".json") or (layout.ingest / name[:-5]).is_dir():
            continue
        count += 1
        if not dry_run:
            with contextlib.suppress(OSError):
                (layout.resume / name).unlink()
    return count


# The job lease ------------------------------------------------------------------------


class JobLease:
    """The lease a job holds on the store (in the store's :class:`Leases`, e.g.
    ``store.leases()``) from its first byte to its image record:
    every blob it is about to check for or commit is added first (:meth:`protect`), so
    no gc run removes it meanwhile. Lives in namespace :data:`JOB_LEASE_NAMESPACE`,
    id ``<kind>-<job id>``, expiring after :data:`JOB_LEASE_TTL` (a crashed job's lease
    stops protecting then). Re-opening the lease of the same job reuses it. ``domains``
    (:func:`ingestq.store.locks.lock_domains` of the job's store locker, or
    :func:`~ingestq.store.locks.shared_domains` for a job that goes on on other hosts)
    are recorded in label :data:`LOCKS_LABEL`, so a gc can tell whether its locks
    exclude this job's."""

    def __init__(
        self, leases: Leases, lease_id: str, domains: frozenset[str] = frozenset()
    ) -> None:
        self._leases = leases
        self.id = lease_id
        labels = {EXPIRE_LABEL: (utcnow() + JOB_LEASE_TTL).isoformat()}
        if domains:
            labels[LOCKS_LABEL] = " ".join(sorted(domains))
        with contextlib.suppress(errdefs.AlreadyExists):
            self._leases.create(JOB_LEASE_NAMESPACE, lease_id, labels)

    def protect(self, *digests: Digest) -> None:
        """Add ``digests`` to the lease (idempotent). NotFound if the lease is gone."""
        resources = [("content", str(d)) for d in digests]
        self._leases.add_resources(JOB_LEASE_NAMESPACE, self.id, resources)

    def release(self) -> None:
        """Drop the lease (gone already is fine)."""
        with contextlib.suppress(errdefs.NotFound):
            self._leases.delete(JOB_LEASE_NAMESPACE, self.id)

    @staticmethod
    def discard(leases: Leases, lease_id: str) -> None:
        """Drop job lease ``lease_id`` of ``leases`` if it exists."""
        with contextlib.suppress(errdefs.NotFound):
            leases.delete(JOB_LEASE_NAMESPACE, lease_id)


# Images: references, check, usage ----------------------------------------------------


def image_trees(store: LocalStore) -> dict[str, set[Digest]]:
    """Per recorded image, every digest its tree reaches (committed or not)."""
    blobs = scan_blobs(store.layout)
    graph = _graph(store.layout, blobs)
    trees: dict[str, set[Digest]] = {}
    for name, digest, media_type in _image_roots(store.layout):
        trees.setdefault(name, set()).update(graph.reach([_image_start(digest, media_type)]))
    return trees


def images_using(store: LocalStore, digest: Digest) -> list[str]:
    """The names of the recorded images whose tree holds ``digest``."""
    return sorted(name for name, tree in image_trees(store).items() if digest in tree)


@dataclass(frozen=True)
class ImageCheck:
    """The state of a recorded image's blobs (``ingestq images check``): ``missing``
    are blobs its manifests need that are not committed, ``incomplete`` those committed
    with another size than their descriptor's, ``damaged`` (only when the check re-read
    them) those whose bytes no longer hash to their digest; manifests of an index that
    were not pulled (other platforms) are listed in ``absent`` without making it
    incomplete."""

    name: str
    digest: str
    present: int
    missing: tuple[str, ...]
    incomplete: tuple[str, ...]
    absent: tuple[str, ...]
    damaged: tuple[str, ...] = ()
    verified: bool = False

    @property
    def complete(self) -> bool:
        """Whether every blob it needs is committed whole (and, when verified, intact)."""
        return not self.missing and not self.incomplete and not self.damaged

    def to_json(self) -> dict[str, Any]:
        """A JSON object."""
        return {
            "name": self.name,
            "digest": self.digest,
            "complete": self.complete,
            "present": self.present,
            "missing": list(self.missing),
            "incomplete": list(self.incomplete),
            "absent": list(self.absent),
            "damaged": list(self.damaged),
            "verified": self.verified,
        }


#: Bytes per read when a check re-hashes a blob.
VERIFY_CHUNK = 8 << 20


class CheckedStore(Protocol):
    """What :func:`check_tree` needs of a store: each blob's size and its bytes."""

    def size_of(self, digest: Digest) -> int | None:
        """The committed blob's size in bytes, None when it is not committed."""
        ...

    def read_at(self, digest: Digest, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of the blob from ``offset``. NotFound when it is
        gone, the store's kinds otherwise."""
        ...


def _intact(store: CheckedStore, digest: Digest, size: int) -> bool:
    """Whether the blob's bytes, read again, hash to ``digest`` (False when it went)."""
    h = digest.hasher()
    offset = 0
    try:
        while offset < size:
            chunk = store.read_at(digest, offset, min(VERIFY_CHUNK, size - offset))
            if not chunk:
                return False
            h.update(chunk)
            offset += len(chunk)
    except (errdefs.NotFound, errdefs.DataLoss, errdefs.OutOfRange):
        return False
    return h.hexdigest() == digest.encoded


def check_tree(
    store: CheckedStore, name: str, image: Digest, size: int, media_type: str,
    *, verify: bool = False,
) -> ImageCheck:  # fmt: skip
    """Walk the tree of image ``name`` (root ``image`` of ``size`` bytes and
    ``media_type``) in ``store``: every blob it reaches must be committed with its
    descriptor's size; with ``verify`` each present blob is also read again and hashed
    (listed in ``damaged`` when it does not match). The store's error kinds for a
    failing read."""
    present: set[Digest] = set()
    missing: list[str] = []
    incomplete: list[str] = []
    absent: list[str] = []
    damaged: list[str] = []

    def visit(digest: Digest, size: int, media_type: str, optional: bool, depth: int) -> None:
        if digest in present:
            return
        actual = store.size_of(digest)
        if actual is None:
            (absent if optional else missing).append(str(digest))
            return
        if size and actual != size:
            incomplete.append(str(digest))
            return
        if verify and not _intact(store, digest, actual):
            damaged.append(str(digest))
            return
        present.add(digest)
        if depth > 8 or not (is_manifest_type(media_type) or media_type == "?"):
            return
        data = b""
        if 0 < actual <= MAX_MANIFEST_BYTES:
            with contextlib.suppress(errdefs.NotFound):
                data = store.read_at(digest, 0, actual)
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = {}
        index = isinstance(doc, dict) and isinstance(doc.get("manifests"), list)
        entries = _entries(doc)
        for entry_digest, entry_size, entry_type in entries:
            visit(entry_digest, entry_size, entry_type, index, depth + 1)
        if index and entries and not any(d in present for d, _, _ in entries):
            missing.extend(str(d) for d, _, _ in entries)

    visit(image, size, media_type if is_manifest_type(media_type) else "?", False, 0)
    return ImageCheck(
        name, str(image), len(present), tuple(missing), tuple(incomplete), tuple(absent),
        tuple(damaged), verify,
    )  # fmt: skip


class _LocalBlobs:
    """A :class:`CheckedStore` over a local store's blob files."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store

    def size_of(self, digest: Digest) -> int | None:
        try:
            st = os.lstat(self.store.layout.blob(digest))
        except OSError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def read_at(self, digest: Digest, offset: int, length: int) -> bytes:
        try:
            fd = open_own(self.store.layout.blob(digest), os.O_RDONLY)
        except FileNotFoundError:
            raise errdefs.NotFound(f"content {digest}") from None
        except OSError as e:
            raise from_os_error(e, f"read {digest}") from e
        try:
            return os.pread(fd, length, offset)
        except OSError as e:
            raise from_os_error(e, f"read {digest}") from e
        finally:
            os.close(fd)


def check_image(store: LocalStore, name: str, *, verify: bool = False) -> ImageCheck:
    """Walk image ``name``'s tree on disk (see :func:`check_tree`; ``verify`` re-reads
    every present blob). NotFound ``image <name>`` if not recorded."""
    desc = ImageIndex(store.root).get(name)
    return check_tree(_LocalBlobs(store), name, desc.digest, desc.size, desc.media_type,
                      verify=verify)  # fmt: skip


def _entries(doc: Any) -> list[tuple[Digest, int, str]]:
    if not isinstance(doc, dict):
        return []
    raw: list[Any] = []
    for key in ("manifests", "layers", "blobs"):
        if isinstance(doc.get(key), list):
            raw.extend(doc[key])
    if isinstance(doc.get("config"), dict):
        raw.append(doc["config"])
    out = []
    for e in raw:
        if isinstance(e, dict) and isinstance(e.get("digest"), str):
            with contextlib.suppress(errdefs.InvalidArgument, TypeError, ValueError):
                out.append((Digest.parse(e["digest"]), int(e.get("size") or 0),
                            str(e.get("mediaType") or "")))  # fmt: skip
    return out


@dataclass(frozen=True)
class ImageUsage:
    """One image's weight: every blob of its tree on disk (``size``), the bytes no
    other image holds (``unique``) and those it shares (``shared``)."""

    name: str
    blobs: int
    size: int
    unique: int
    shared: int


@dataclass(frozen=True)
class Usage:
    """The store's disk use (``ingestq df``). ``reclaimable`` is a dry gc run."""

    blobs: int
    bytes: int
    images: tuple[ImageUsage, ...]
    requested_blobs: int
    requested_bytes: int
    partial_ingests: int
    partial_bytes: int
    oldest_partial: datetime | None
    job_records: int
    job_record_bytes: int
    reclaimable: GcReport
    quarantined: int = 0  # damaged blobs moved aside (a local store's quarantine/)
    quarantine_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON object (``ingestq df --json``)."""
        r = self.reclaimable
        return {
            "blobs": {"count": self.blobs, "bytes": self.bytes},
            "images": [
                {
                    "name": i.name,
                    "blobs": i.blobs,
                    "size": i.size,
                    "unique": i.unique,
                    "shared": i.shared,
                }
                for i in self.images
            ],
            "plain_ingests": {"count": self.requested_blobs, "bytes": self.requested_bytes},
            "partial_ingests": {
                "count": self.partial_ingests,
                "bytes": self.partial_bytes,
                "oldest": self.oldest_partial.isoformat() if self.oldest_partial else None,
            },
            "job_records": {"count": self.job_records, "bytes": self.job_record_bytes},
            "quarantine": {"count": self.quarantined, "bytes": self.quarantine_bytes},
            "reclaimable": {
                "blobs": len(r.blobs),
                "bytes": r.bytes,
                "ingests": len(r.ingests),
                "ingest_bytes": r.ingest_bytes,
                "resume_hints": r.resume_hints,
                "temp_files": r.temp_files,
                "leases": len(r.leases),
                "job_records": r.job_records,
                "quarantined": len(r.quarantined),
                "quarantine_bytes": r.quarantine_bytes,
            },
        }


def image_usage(trees: Mapping[str, set[Digest]], sizes: Mapping[Digest, int]) -> list[ImageUsage]:
    """Per image of ``trees`` (name -> every digest it reaches), what of it the store
    holds (``sizes``): blobs, bytes, bytes no other image holds, bytes shared."""
    holders: dict[Digest, int] = {}
    for tree in trees.values():
        for d in tree:
            if d in sizes:
                holders[d] = holders.get(d, 0) + 1
    images = []
    for name, tree in trees.items():
        held = [d for d in tree if d in sizes]
        unique = sum(sizes[d] for d in held if holders[d] == 1)
        size = sum(sizes[d] for d in held)
        images.append(ImageUsage(name, len(held), size, unique, size - unique))
    return images


def usage(store: LocalStore, reclaimable: GcReport) -> Usage:
    """The store's disk use now, with ``reclaimable`` (a dry run of :func:`collect`, to
    which the jobs layer adds its records)."""
    layout = store.layout
    blobs = scan_blobs(layout)
    graph = _graph(layout, blobs)
    trees: dict[str, set[Digest]] = {}
    for name, digest, media_type in _image_roots(layout):
        trees.setdefault(name, set()).update(graph.reach([_image_start(digest, media_type)]))
    images = image_usage(trees, {d: b.size for d, b in blobs.items()})
    requested = [b for b in blobs.values() if REQUESTED_LABEL in b.labels]
    partial = partial_ingests(store)
    oldest = min((p.updated_at for p in partial), default=None)
    records, record_bytes = 0, 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(layout.jobs):
            if entry.name.endswith(".json") and entry.is_file():
                records += 1
                record_bytes += entry.stat().st_size
    held = quarantine.held(layout.quarantine)
    return Usage(
        blobs=len(blobs),
        bytes=sum(b.size for b in blobs.values()),
        images=tuple(images),
        requested_blobs=len(requested),
        requested_bytes=sum(b.size for b in requested),
        partial_ingests=len(partial),
        partial_bytes=sum(p.size for p in partial),
        oldest_partial=datetime.fromtimestamp(oldest, UTC) if oldest is not None else None,
        job_records=records,
        job_record_bytes=record_bytes,
        reclaimable=reclaimable,
        quarantined=len(held),
        quarantine_bytes=sum(held),
    )


__all__ = [
    "DEFAULT_INGEST_MAX_AGE",
    "DEFAULT_QUARANTINE_MAX_AGE",
    "GC_REF_PREFIX",
    "GC_ROOT_LABEL",
    "JOB_LEASE_NAMESPACE",
    "JOB_LEASE_TTL",
    "NEVER",
    "REQUESTED_LABEL",
    "BlobFile",
    "GcOptions",
    "GcReport",
    "ImageCheck",
    "ImageUsage",
    "JobLease",
    "PartialIngest",
    "Usage",
    "check_image",
    "collect",
    "image_trees",
    "images_using",
    "is_manifest_type",
    "is_root",
    "json_children",
    "label_children",
    "live_leases",
    "parse_duration",
    "partial_ingests",
    "prune_leases",
    "requested_labels",
    "scan_blobs",
    "usage",
]
