"""Planning a pull: :class:`PlannedBlob` (one blob with its ingest ref and source),
:class:`PullPlan` (everything a pull fetches and records, JSON both ways) and
:func:`plan_pull`, which resolves an image, ingests its index and manifests and
returns the plan of the configs and layers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ingestq import errdefs
from ingestq.fetch import manifests, platforms
from ingestq.images.request import ImageSource, PullRequest
from ingestq.ingest.request import IngestRequest
from ingestq.store.digest import Digest
from ingestq.store.helpers import read_blob
from ingestq.store.protocols import Manager, Provider
from ingestq.store.values import Descriptor

#: How deep an index may nest inside another before the pull gives up.
MAX_DEPTH = 4


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

    def committed(self, store: Manager) -> bool:
        """Whether ``store`` holds this blob: its digest committed with the descriptor's
        size (any size when that is 0). A committed blob of another size is not this
        blob: only its ingest (:meth:`request`) may settle it, FailedPrecondition for an
        intact blob as for any ingest, a fetch again for a damaged one."""
        try:
            info = store.info(self.desc.digest)
        except errdefs.NotFound:
            return False
        return not self.desc.size or info.size == self.desc.size

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
        except (KeyError, TypeError, ValueError, AttributeError) as e:
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
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
            raise errdefs.InvalidArgument(f"malformed pull plan: {e}") from e


def planned(image: ImageSource, desc: Descriptor) -> PlannedBlob:
    """``desc`` of ``image`` as a planned blob (its ref and source spec)."""
    return PlannedBlob(desc, manifests.ref_key(desc), image.spec(desc))


#: The largest image config read while planning (real ones are a few KiB).
MAX_CONFIG = 4 << 20


def _read_config(store: Provider, image: ImageSource, config: Descriptor) -> bytes:
    """The bytes of ``config``: the committed blob, else read from the image's source (at
    most :data:`MAX_CONFIG`, checked against the descriptor: DataLoss if they differ)."""
    try:
        return read_blob(store, config)
    except errdefs.NotFound:
        pass
    if config.size > MAX_CONFIG:
        raise errdefs.ResourceExhausted(
            f"config {config.digest}: {config.size} bytes, more than {MAX_CONFIG}"
        )
    limit = (config.size or MAX_CONFIG) + 1  # one more: a longer blob fails verify
    opened = image.blob_source(config).open(0)
    try:
        parts: list[bytes] = []
        got = 0
        while got < limit and (piece := opened.stream.read(limit - got)):
            parts.append(piece)
            got += len(piece)
    finally:
        opened.stream.close()
    data = b"".join(parts)
    manifests.verify(data, config, f"config {config.digest}")
    return data


def plan_pull(
    store: Provider,
    image: ImageSource,
    request: PullRequest,
    ingest_blob: Callable[[PlannedBlob], object],
) -> PullPlan:
    """Resolve ``image`` and ingest its index and manifests (through ``ingest_blob``,
    which must leave each committed in ``store``); return the plan of the children.

    A single manifest (no index) must be of a wanted platform: its image config is read
    while planning (from the store when committed, else from the source, bounded and
    verified, without committing it: the config stays a child of the plan) and the
    platform it declares must match one of them (a config declaring none passes).

    Raises NotFound (unknown reference, or no manifest for a wanted platform: the
    message lists the platforms the image has),
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
            if depth == 0 and wanted and not request.all_platforms:
                check_config_platform(doc.config)
            labels[str(desc.digest)] = doc.gc_labels()
            for child in doc.children:
                children.setdefault(child.digest, planned(image, child))

    def check_config_platform(config: Descriptor) -> None:
        if config.media_type not in (manifests.OCI_CONFIG, manifests.DOCKER_CONFIG):
            return
        have = platforms.config_platform(_read_config(store, image, config))
        if have is not None:
            platforms.check_platform(f"image {image.name}", have, wanted)

    visit(root, 0)
    return PullPlan(
        name=request.name or image.name,
        target=root,
        manifests=tuple(manifest_blobs.values()),
        children=tuple(children.values()),
        labels=labels,
        source=image.distribution_source,
    )
