"""Whole-image pulls: resolve, ingest the index and manifests, select platforms, fetch
config and layers as child ingests, label, and record the image.

A pull runs in three steps, in both modes:

1. **Plan** (:func:`plan_pull`): resolve the reference to its root descriptor, ingest
   the root (index or manifest) into the store, read it back (the store verified its
   digest and size at commit), select the manifests of the wanted platforms (default:
   the host's; ``platforms``; ``all_platforms``), ingest each, and collect the configs
   and layers, each digest once. The plan names every blob with its ingest ref
   (containerd's ``MakeRefKey``: ``layer-sha256:...``) and its source spec.
2. **Fetch the children**: each config and layer is an ordinary ingest (the ingest
   core of :mod:`ingestq.ingest.core`) with the expected digest and size. The store's ref
   locks (file locks on a host, Redis leases across hosts) and the content-addressed
   commit make a blob shared by several images be fetched once, also when the pulls
   run at the same time: the second ingest of a ref waits for the first and then finds
   the digest committed.
3. **Finalize** (:func:`finalize`): set containerd's GC reference labels on the parents
   (``containerd.io/gc.ref.content.m.<i>`` on an index, ``.config`` and ``.l.<i>`` on a
   manifest) and ``containerd.io/distribution.source.<host>=<repo>`` on every blob of a
   registry image, then record the image in the store's OCI ``index.json`` under its
   name. The image is recorded only once every blob is committed, so a reader of the
   layout (skopeo) never sees a partial image.

Modes:

* **Embedded** (no Redis): :func:`enqueue_pull` starts the pull in a thread of this
  process (:mod:`ingestq.jobs.localpull`); the children run in a thread pool
  (``concurrency``). The job record lives
  at ``<root>/jobs/<id>.json`` (the embedded job format of :mod:`ingestq.jobs.local`, plus
  ``kind: pull`` and the plan), so ``ingestq job status`` reads it too.
* **Queue** (Redis): the pull is the Celery task ``ingestq.pull``
  (:mod:`ingestq.tasks.pull_task`); children are ``ingestq.ingest`` tasks that any worker
  takes; the pull task then *replaces itself* (same job id) with ``ingestq.pull.finalize``,
  which never waits inside a worker slot: while children are pending it re-sends
  itself with a short countdown and ends. With prefetch 1 and one worker slot, the
  parent therefore never holds the only slot its children need.

Names: the image is recorded under the fully qualified reference
(``127.0.0.1:5000/app:v1``, ``docker.io/library/ubuntu:latest``; ``@sha256:...`` when
pulled by digest), or ``name`` when given. skopeo splits ``oci:PATH:NAME`` at the first
``:``, and its name grammar accepts ``:``, ``/`` and ``@``, so
``skopeo inspect oci:<root>:127.0.0.1:5000/app:v1`` works as long as the store root has
no ``:`` in its path.

Errors keep their kind end to end: a child's NotFound (``BLOB_UNKNOWN``) fails the pull
with NotFound, wrapped as ``pull <name>: <ref>: ...``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from ingestq import errdefs
from ingestq.fetch import manifests, platforms
from ingestq.fetch.ocilayout import PREFIX as LAYOUT_PREFIX
from ingestq.fetch.ocilayout import OCILayoutImage, parse_layout_reference
from ingestq.fetch.reference import parse_reference
from ingestq.fetch.registry.client import RegistryImage, RegistryOptions, shared_client
from ingestq.fetch.source import Source
from ingestq.ingest.core import IngestRequest
from ingestq.jobs.api import JobState, job_id_for
from ingestq.store.annotations import SOURCE_DIGEST as SOURCE_DIGEST_ANNOTATION
from ingestq.store.annotations import SOURCE_MEDIA_TYPE as SOURCE_MEDIA_TYPE_ANNOTATION
from ingestq.store.codec import info_from_json, info_to_json
from ingestq.store.digest import Digest
from ingestq.store.helpers import read_blob, write_blob
from ingestq.store.images import ImageIndex
from ingestq.store.local import LocalStore
from ingestq.store.values import Descriptor, Info, utcnow

TASK_PULL = "ingestq.pull"
TASK_PULL_FINALIZE = "ingestq.pull.finalize"
#: How deep an index may nest inside another before the pull gives up.
MAX_DEPTH = 4
#: Threads per embedded pull fetching children at once.
DEFAULT_CONCURRENCY = 4


# -- the request ------------------------------------------------------------------------
@dataclass(frozen=True)
class PullRequest:
    """What to pull. JSON-serialisable (:meth:`to_json`), with no secrets in it.

    Attributes:
        reference: ``[HOST[:PORT]/]REPO[:TAG][@DIGEST]`` or ``oci-layout:DIR[:NAME]``.
        platforms: ``os/arch[/variant]`` specifiers; empty means the host's platform.
        all_platforms: take every manifest of an index.
        options: how to reach the registry (plain HTTP, TLS, timeouts, auth files).
        name: record the image under this name instead of the reference.
        concurrency: children fetched at once by an embedded pull.
    """

    reference: str
    platforms: tuple[str, ...] = ()
    all_platforms: bool = False
    options: RegistryOptions = field(default_factory=RegistryOptions)
    name: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY

    def validate(self) -> None:
        """Parse the reference and platforms; InvalidArgument if malformed."""
        if self.reference.startswith(LAYOUT_PREFIX):
            parse_layout_reference(self.reference)
        else:
            parse_reference(self.reference)
        for spec in self.platforms:
            platforms.parse(spec)
        if self.concurrency < 1:
            raise errdefs.InvalidArgument(f"concurrency {self.concurrency} must be at least 1")
        if self.name is not None and not self.name:
            raise errdefs.InvalidArgument("image name must not be empty")

    def to_json(self) -> dict[str, Any]:
        """The JSON object a pull job carries."""
        return {
            "reference": self.reference,
            "platforms": list(self.platforms),
            "all_platforms": self.all_platforms,
            "options": self.options.to_dict(),
            "name": self.name,
            "concurrency": self.concurrency,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PullRequest:
        """Parse :meth:`to_json`'s output; InvalidArgument when malformed."""
        if not isinstance(obj, Mapping) or not isinstance(obj.get("reference"), str):
            raise errdefs.InvalidArgument("pull request needs a reference")
        plats = obj.get("platforms") or []
        if not isinstance(plats, list | tuple):
            raise errdefs.InvalidArgument("pull request platforms must be a list")
        name = obj.get("name")
        concurrency = obj.get("concurrency", DEFAULT_CONCURRENCY)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool):
            raise errdefs.InvalidArgument(f"concurrency {concurrency!r} is not an integer")
        return cls(
            reference=obj["reference"],
            platforms=tuple(str(p) for p in plats),
            all_platforms=bool(obj.get("all_platforms", False)),
            options=RegistryOptions.from_dict(obj.get("options")),
            name=str(name) if name is not None else None,
            concurrency=concurrency,
        )


# -- where images come from -------------------------------------------------------------
class ImageSource(Protocol):
    """An image to pull: :class:`~tasks.sources.registry.RegistryImage` or
    :class:`~tasks.sources.ocilayout.OCILayoutImage`."""

    @property
    def name(self) -> str:
        """The name the image is recorded under by default."""
        ...

    @property
    def distribution_source(self) -> tuple[str, str] | None:
        """(host, repository) for the distribution-source label, or None."""
        ...

    def resolve(self) -> Descriptor:
        """The root descriptor (an index or a manifest)."""
        ...

    def blob_source(self, desc: Descriptor) -> Source:
        """A Source for any blob of the image (manifests included)."""
        ...

    def spec(self, desc: Descriptor) -> dict[str, Any]:
        """The job-argument form of :meth:`blob_source`."""
        ...


def open_image(request: PullRequest, roots: Sequence[Path] | None = None) -> ImageSource:
    """The image ``request`` names. ``roots``: the file roots an OCI layout must lie in
    (None: anywhere). InvalidArgument for a malformed reference."""
    if request.reference.startswith(LAYOUT_PREFIX):
        return OCILayoutImage(request.reference, roots)
    return RegistryImage(shared_client(request.options), parse_reference(request.reference))


# -- the plan ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedBlob:
    """One blob of a pull: its descriptor, ingest ref, source spec and (queue mode) the
    id of the child job that fetches it."""

    desc: Descriptor
    ref: str
    source: Mapping[str, Any]
    job_id: str = ""

    @property
    def kind(self) -> str:
        """The ref's prefix: ``index``, ``manifest``, ``config``, ``layer`` or ``blob``."""
        return self.ref.split("-", 1)[0]

    def request(self) -> IngestRequest:
        """The ingest request that fetches this blob."""
        d = self.desc
        return IngestRequest(dict(self.source), self.ref, d.digest, d.size, d.media_type)

    def to_json(self) -> dict[str, Any]:
        """A JSON object."""
        return {
            "desc": self.desc.to_oci(),
            "ref": self.ref,
            "source": dict(self.source),
            "job_id": self.job_id,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PlannedBlob:
        """Parse :meth:`to_json`'s output; InvalidArgument when malformed."""
        try:
            return cls(
                desc=Descriptor.from_oci(obj["desc"]),
                ref=str(obj["ref"]),
                source=dict(obj["source"]),
                job_id=str(obj.get("job_id") or ""),
            )
        except (KeyError, TypeError) as e:
            raise errdefs.InvalidArgument(f"malformed planned blob: {e}") from e


@dataclass(frozen=True)
class PullPlan:
    """Everything a pull fetches and records. JSON-serialisable.

    Attributes:
        name: the image name to record.
        target: the root descriptor (recorded in ``index.json``).
        manifests: the root and the selected manifests (ingested while planning).
        children: configs and layers, each digest once, in manifest order.
        labels: GC reference labels per parent digest.
        source: (host, repository) of a registry image, else None.
    """

    name: str
    target: Descriptor
    manifests: tuple[PlannedBlob, ...]
    children: tuple[PlannedBlob, ...]
    labels: Mapping[str, Mapping[str, str]]
    source: tuple[str, str] | None = None

    def with_job_ids(self, pull_id: str) -> PullPlan:
        """The plan with a child job id per child, derived from ``pull_id`` and the
        digest (so a redelivered pull names the same jobs)."""
        children = tuple(
            replace(c, job_id=job_id_for(f"pull:{pull_id}:{c.desc.digest}")) for c in self.children
        )
        return replace(self, children=children)

    @property
    def total(self) -> int:
        """Bytes of every blob in the plan."""
        return sum(b.desc.size for b in (*self.manifests, *self.children))

    def to_json(self) -> dict[str, Any]:
        """A JSON object."""
        return {
            "name": self.name,
            "target": self.target.to_oci(),
            "manifests": [b.to_json() for b in self.manifests],
            "children": [b.to_json() for b in self.children],
            "labels": {k: dict(v) for k, v in self.labels.items()},
            "source": list(self.source) if self.source else None,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PullPlan:
        """Parse :meth:`to_json`'s output; InvalidArgument when malformed."""
        try:
            source = obj.get("source")
            return cls(
                name=str(obj["name"]),
                target=Descriptor.from_oci(obj["target"]),
                manifests=tuple(PlannedBlob.from_json(b) for b in obj["manifests"]),
                children=tuple(PlannedBlob.from_json(b) for b in obj["children"]),
                labels={str(k): dict(v) for k, v in obj["labels"].items()},
                source=(str(source[0]), str(source[1])) if source else None,
            )
        except (KeyError, TypeError, IndexError, AttributeError) as e:
            raise errdefs.InvalidArgument(f"malformed pull plan: {e}") from e


def planned(image: ImageSource, desc: Descriptor) -> PlannedBlob:
    """``desc`` of ``image`` as a planned blob (its ref and source spec)."""
    return PlannedBlob(desc, manifests.ref_key(desc), image.spec(desc))


def plan_pull(
    store: LocalStore,
    image: ImageSource,
    request: PullRequest,
    ingest_blob: Callable[[PlannedBlob], object],
) -> PullPlan:
    """Resolve ``image`` and ingest its index and manifests (through ``ingest_blob``);
    return the plan of the children.

    Raises NotFound (unknown reference, or no manifest for a wanted platform),
    InvalidArgument / Unimplemented (malformed or unsupported manifests, an index
    nested deeper than :data:`MAX_DEPTH`), and whatever ``ingest_blob`` raises.
    """
    wanted = [platforms.parse(p) for p in request.platforms]
    root = image.resolve()
    manifest_blobs: dict[Digest, PlannedBlob] = {}
    children: dict[Digest, PlannedBlob] = {}
    labels: dict[str, dict[str, str]] = {}

    def visit(desc: Descriptor, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise errdefs.InvalidArgument(f"index nesting deeper than {MAX_DEPTH} at {desc.digest}")
        if desc.digest in manifest_blobs:
            return
        blob = planned(image, desc)
        ingest_blob(blob)
        manifest_blobs[desc.digest] = blob
        doc = manifests.parse(desc, read_blob(store, desc))
        if isinstance(doc, manifests.Index):
            selected = platforms.select_manifests(
                doc.manifests, wanted, all_platforms=request.all_platforms
            )
            chosen = [d for d, _ in selected]
            labels[str(desc.digest)] = manifests.index_gc_labels(chosen)
            for child in chosen:
                if manifests.is_index(child.media_type) or manifests.is_manifest(child.media_type):
                    visit(child, depth + 1)
                else:
                    children.setdefault(child.digest, planned(image, child))
        else:
            labels[str(desc.digest)] = doc.gc_labels()
            for child in doc.children:
                children.setdefault(child.digest, planned(image, child))

    visit(root, 0)
    return PullPlan(
        name=request.name or image.name,
        target=root,
        manifests=tuple(manifest_blobs.values()),
        children=tuple(children.values()),
        labels=labels,
        source=image.distribution_source,
    )


#: Annotations on an OCI view recorded for a Docker-typed image: the original root.


def oci_view(store: LocalStore, plan: PullPlan, desc: Descriptor | None = None) -> Descriptor:
    """The OCI-typed descriptor to record for ``desc`` (default: the plan's target).

    skopeo reads only OCI-typed entries of a layout's ``index.json`` (and refuses
    Docker configs on inspect), so a Docker schema2 manifest is recorded through an
    equivalent OCI manifest (same config and layer blobs, OCI media types), and an
    index holding any Docker manifest, or a Docker manifest list, through an OCI index
    over the pulled manifests' views. The converted blobs are written to the store with
    their GC labels; an OCI image is its own view. Deterministic, so idempotent.
    """
    desc = desc or plan.target
    pulled = {b.desc.digest for b in plan.manifests}
    data = read_blob(store, desc)
    doc = manifests.parse(desc, data)
    if isinstance(doc, manifests.Manifest):
        if desc.media_type == manifests.OCI_MANIFEST:
            return desc
        new = manifests.oci_manifest(desc, data)
        labels = doc.gc_labels()
        media_type = manifests.OCI_MANIFEST
    else:
        changed = desc.media_type != manifests.OCI_INDEX
        entries: list[dict[str, object]] = []
        views: list[Descriptor] = []
        for entry in doc.manifests:
            child = Descriptor.from_oci(entry)
            if child.digest not in pulled:
                continue
            view = oci_view(store, plan, child)
            changed = changed or view.digest != child.digest
            entries.append(
                {**entry, "mediaType": view.media_type, "digest": str(view.digest),
                 "size": view.size}
            )  # fmt: skip
            views.append(view)
        if not changed:
            return desc
        new = manifests.oci_index(entries)
        labels = manifests.index_gc_labels(views)
        media_type = manifests.OCI_INDEX
    view_desc = Descriptor(Digest.from_bytes(new), len(new), media_type)
    write_blob(store, manifests.ref_key(view_desc), io.BytesIO(new), view_desc)
    _label(store, view_desc, labels)
    return view_desc


def _label(store: LocalStore, desc: Descriptor, labels: Mapping[str, str]) -> None:
    if labels:
        now = utcnow()
        store.update(
            Info(desc.digest, desc.size, now, now, dict(labels)), *(f"labels.{k}" for k in labels)
        )


def finalize(store: LocalStore, plan: PullPlan) -> tuple[Info, Descriptor]:
    """Label every blob of ``plan`` and record the image; return the root's Info and the
    descriptor recorded in ``index.json``.

    Parents get their GC reference labels; with a registry source every blob gets its
    ``distribution.source`` label (the repository added to the comma list). Then the
    image is put in the store's ``index.json`` under ``plan.name``: the target itself
    for an OCI image, else its :func:`oci_view` (annotated with the original digest and
    media type). Idempotent.

    Raises FailedPrecondition when a blob of the plan is not committed, InvalidArgument
    for an oversize label.
    """
    for blob in (*plan.manifests, *plan.children):
        if not store.exists(blob.desc.digest):
            raise errdefs.FailedPrecondition(f"pull {plan.name}: {blob.ref} is not committed")
    for blob in (*plan.children, *plan.manifests):
        digest = blob.desc.digest
        new = dict(plan.labels.get(str(digest), {}))
        if plan.source is not None:
            host, repo = plan.source
            key = manifests.distribution_source_key(host)
            current = store.info(digest).labels.get(key)
            value = manifests.append_distribution_source(current, repo)
            if value != current:
                new[key] = value
        _label(store, blob.desc, new)
    view = oci_view(store, plan)
    if view.digest != plan.target.digest:
        view = replace(
            view,
            annotations={
                SOURCE_DIGEST_ANNOTATION: str(plan.target.digest),
                SOURCE_MEDIA_TYPE_ANNOTATION: plan.target.media_type,
            },
        )
    ImageIndex(store.root).put(plan.name, view)
    return store.info(plan.target.digest), view


# -- results and status -----------------------------------------------------------------
@dataclass(frozen=True)
class ChildResult:
    """How one child ended: fetched (how many bytes, from which offset) or already there."""

    ref: str
    digest: Digest
    size: int
    fetched: bool
    bytes_fetched: int = 0
    resumed_from: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON object."""
        return {
            "ref": self.ref,
            "digest": str(self.digest),
            "size": self.size,
            "fetched": self.fetched,
            "bytes_fetched": self.bytes_fetched,
            "resumed_from": self.resumed_from,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ChildResult:
        """Parse :meth:`to_json`'s output (or an ingest job's result)."""
        try:
            return cls(
                ref=str(obj["ref"]),
                digest=Digest.parse(obj["digest"]),
                size=int(obj["size"]),
                fetched=bool(obj.get("fetched", False)),
                bytes_fetched=int(obj.get("bytes_fetched", 0)),
                resumed_from=int(obj.get("resumed_from", 0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise errdefs.InvalidArgument(f"malformed child result: {e}") from e


@dataclass(frozen=True)
class PullResult:
    """A finished pull: the recorded name, the root's descriptor and Info, the children."""

    name: str
    target: Descriptor
    info: Info
    children: tuple[ChildResult, ...] = ()
    recorded: Descriptor | None = None

    @property
    def bytes_fetched(self) -> int:
        """Bytes the children fetched from the source (0 when all were present)."""
        return sum(c.bytes_fetched for c in self.children)

    def to_json(self) -> dict[str, Any]:
        """The root Info's JSON (so generic job readers see an Info) plus the pull's."""
        out = info_to_json(self.info)
        out.update(
            kind="pull",
            name=self.name,
            target=self.target.to_oci(),
            recorded=(self.recorded or self.target).to_oci(),
            children=[c.to_json() for c in self.children],
            bytes_fetched=self.bytes_fetched,
        )
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PullResult:
        """Parse :meth:`to_json`'s output; InvalidArgument when malformed."""
        try:
            return cls(
                name=str(obj["name"]),
                target=Descriptor.from_oci(obj["target"]),
                info=info_from_json(obj),
                children=tuple(ChildResult.from_json(c) for c in obj.get("children") or ()),
                recorded=Descriptor.from_oci(obj["recorded"]) if obj.get("recorded") else None,
            )
        except (KeyError, TypeError) as e:
            raise errdefs.InvalidArgument(f"malformed pull result: {e}") from e


class BlobState(StrEnum):
    """Where one blob of a pull is."""

    WAITING = "waiting"
    DOWNLOADING = "downloading"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass(frozen=True)
class BlobStatus:
    """One blob of a pull: ref, digest, state, bytes done of its size, and why it waits or
    failed."""

    ref: str
    digest: Digest
    media_type: str
    size: int
    state: BlobState
    offset: int = 0
    reason: str | None = None

    @property
    def kind(self) -> str:
        """The ref's prefix (``layer``, ``config``, ``manifest``, ``index``)."""
        return self.ref.split("-", 1)[0]

    def to_json(self) -> dict[str, Any]:
        """A JSON object."""
        return {
            "ref": self.ref,
            "digest": str(self.digest),
            "media_type": self.media_type,
            "size": self.size,
            "state": self.state.value,
            "offset": self.offset,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class PullStatus:
    """A pull's state and its blobs' (empty until the plan exists)."""

    id: str
    state: JobState
    reference: str
    name: str | None = None
    reason: str | None = None
    target: Descriptor | None = None
    blobs: tuple[BlobStatus, ...] = ()

    @property
    def bytes_done(self) -> int:
        """Bytes committed or written so far, over every blob."""
        return sum(b.size if b.state is BlobState.DONE else b.offset for b in self.blobs)

    @property
    def bytes_total(self) -> int:
        """Bytes of every blob (0 until planned)."""
        return sum(b.size for b in self.blobs)

    def to_json(self) -> dict[str, Any]:
        """A JSON object."""
        return {
            "id": self.id,
            "state": self.state.value,
            "reference": self.reference,
            "name": self.name,
            "reason": self.reason,
            "target": self.target.to_oci() if self.target else None,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "blobs": [b.to_json() for b in self.blobs],
        }


__all__ = [
    "SOURCE_DIGEST_ANNOTATION",
    "SOURCE_MEDIA_TYPE_ANNOTATION",
    "TASK_PULL",
    "TASK_PULL_FINALIZE",
    "BlobState",
    "BlobStatus",
    "ChildResult",
    "ImageSource",
    "PlannedBlob",
    "PullPlan",
    "PullRequest",
    "PullResult",
    "PullStatus",
    "finalize",
    "oci_view",
    "open_image",
    "plan_pull",
]
