"""OCI and Docker schema2 manifests and indexes: media types, parsing, children, ingest
refs and containerd's GC / distribution-source labels.

Pure functions over bytes and descriptors; no I/O. Errors:

* :class:`errdefs.InvalidArgument`: not JSON, not a schema 2 document, or a
  ``mediaType`` field that disagrees with the descriptor (the spec says to reject it);
* :class:`errdefs.Unimplemented`: Docker schema 1 or a media type that is not a
  manifest or an index;
* :class:`errdefs.DataLoss`: bytes that are not what their descriptor says
  (:func:`verify`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ingestq import errdefs
from ingestq.fetch.refkey import make_ref_key
from ingestq.store.digest import Digest
from ingestq.store.values import Descriptor

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_PREFIX = "application/vnd.oci.image.layer."
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_PREFIXES = (
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
)
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
)

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset(
    {
        OCI_CONFIG,
        DOCKER_CONFIG,
        "application/vnd.docker.container.image.rootfs.diff+json",
        "application/vnd.containerd.container.criu.checkpoint.criu.tar",
        "application/vnd.containerd.container.checkpoint.config.v1+proto",
        "application/vnd.containerd.container.checkpoint.config.v1+json",
        "application/vnd.containerd.container.checkpoint.options.v1+proto",
        "application/vnd.containerd.container.checkpoint.runtime.name",
        "application/vnd.containerd.container.checkpoint.runtime.options+proto",
    }
)

#: The ``Accept`` header for manifest requests: all four schema 2 types (Part B3).
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST))

GC_REF_PREFIX = "containerd.io/gc.ref.content."
DISTRIBUTION_SOURCE_PREFIX = "containerd.io/distribution.source."


def is_index(media_type: str) -> bool:
    """An OCI index or a Docker manifest list."""
    return media_type in INDEX_TYPES


def is_manifest(media_type: str) -> bool:
    """An OCI image manifest or a Docker schema2 manifest."""
    return media_type in MANIFEST_TYPES


def is_layer(media_type: str) -> bool:
    """A layer type (OCI ``layer.*``, or a Docker rootfs diff tar, plain or foreign)."""
    return media_type.startswith(OCI_LAYER_PREFIX) or media_type.startswith(DOCKER_LAYER_PREFIXES)


def ref_key(desc: Descriptor) -> str:
    """containerd's ``MakeRefKey`` for ``desc`` (``layer-sha256:...``, ``manifest-...``),
    as :func:`ingestq.fetch.refkey.make_ref_key` spells it."""
    return make_ref_key(desc.digest, desc.media_type, desc.annotations)


@dataclass(frozen=True)
class Manifest:
    """An image manifest: its config and its layers."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def children(self) -> tuple[Descriptor, ...]:
        """The config, then the layers."""
        return (self.config, *self.layers)

    def gc_labels(self) -> dict[str, str]:
        """containerd's GC reference labels for this manifest's blob."""
        labels = {f"{GC_REF_PREFIX}config": str(self.config.digest)}
        for i, layer in enumerate(self.layers):
            labels[f"{GC_REF_PREFIX}l.{i}"] = str(layer.digest)
        return labels


@dataclass(frozen=True)
class Index:
    """An image index / manifest list: its raw ``manifests`` entries (with platforms)."""

    media_type: str
    manifests: tuple[Mapping[str, object], ...]


def index_gc_labels(children: Sequence[Descriptor]) -> dict[str, str]:
    """containerd's GC reference labels for an index over ``children`` (``m.<i>``)."""
    return {f"{GC_REF_PREFIX}m.{i}": str(child.digest) for i, child in enumerate(children)}


def _load(desc: Descriptor, data: bytes) -> dict[str, object]:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise errdefs.InvalidArgument(f"manifest {desc.digest} is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise errdefs.InvalidArgument(f"manifest {desc.digest} is not a JSON object")
    declared = doc.get("mediaType")
    if declared is not None and declared != desc.media_type:
        raise errdefs.InvalidArgument(
            f"manifest {desc.digest}: mediaType {declared!r} disagrees with the "
            f"descriptor's {desc.media_type!r}"
        )
    if doc.get("schemaVersion") != 2:
        raise errdefs.Unimplemented(
            f"manifest {desc.digest}: schemaVersion {doc.get('schemaVersion')!r} not supported"
        )
    return doc


def _descriptor(obj: object, what: str) -> Descriptor:
    """A descriptor of a manifest or an index. Its size is required (OCI and Docker
    schema 2 both say so): a missing one would leave the blob's download unbounded, and
    a blob of 0 bytes has the empty digest. InvalidArgument otherwise."""
    if not isinstance(obj, Mapping):
        raise errdefs.InvalidArgument(f"{what} is not a descriptor object")
    if "size" not in obj:
        raise errdefs.InvalidArgument(f"{what} has no size")
    desc = Descriptor.from_oci(obj)
    if desc.size == 0 and desc.digest != Digest.from_bytes(b"", desc.digest.algorithm):
        raise errdefs.InvalidArgument(f"{what}: 0 bytes cannot hash to {desc.digest}")
    return desc


def parse(desc: Descriptor, data: bytes) -> Manifest | Index:
    """Parse ``data`` (already verified against ``desc``) as a manifest or an index.

    Raises InvalidArgument for malformed documents and Unimplemented for schema 1 or
    a media type that is neither.
    """
    mt = desc.media_type
    if mt in DOCKER_SCHEMA1:
        raise errdefs.Unimplemented(f"{mt} not supported")
    if is_index(mt):
        doc = _load(desc, data)
        entries = doc.get("manifests")
        if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
            raise errdefs.InvalidArgument(f"index {desc.digest}: manifests must be a list")
        for i, entry in enumerate(entries):
            _descriptor(entry, f"index {desc.digest} manifests[{i}]")
        return Index(mt, tuple(entries))
    if is_manifest(mt):
        doc = _load(desc, data)
        config = _descriptor(doc.get("config"), f"manifest {desc.digest} config")
        layers_raw = doc.get("layers")
        if not isinstance(layers_raw, list):
            raise errdefs.InvalidArgument(f"manifest {desc.digest}: layers must be a list")
        layers = tuple(
            _descriptor(layer, f"manifest {desc.digest} layers[{i}]")
            for i, layer in enumerate(layers_raw)
        )
        return Manifest(mt, config, layers)
    raise errdefs.Unimplemented(f"media type {mt!r} is neither a manifest nor an index")


def sniff_media_type(data: bytes) -> str | None:
    """The media type a manifest document declares, or guesses from its shape (an OCI
    layout entry without ``mediaType``); None if it is not a manifest or an index."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    return None


#: Docker media types and their OCI equivalents (what skopeo's docker→oci conversion uses).
OCI_EQUIVALENTS = {
    DOCKER_MANIFEST: OCI_MANIFEST,
    DOCKER_MANIFEST_LIST: OCI_INDEX,
    DOCKER_CONFIG: OCI_CONFIG,
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": (
        "application/vnd.oci.image.layer.v1.tar+gzip"
    ),
    "application/vnd.docker.image.rootfs.diff.tar.zstd": (
        "application/vnd.oci.image.layer.v1.tar+zstd"
    ),
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    ),
}


def _oci_descriptor(obj: Mapping[str, object]) -> dict[str, object]:
    out = dict(obj)
    mt = str(out.get("mediaType", ""))
    out["mediaType"] = OCI_EQUIVALENTS.get(mt, mt)
    return out


def _dump(doc: Mapping[str, object]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def oci_manifest(desc: Descriptor, data: bytes) -> bytes:
    """The OCI image manifest equivalent of a Docker schema2 manifest: the same config
    and layer blobs (digests and sizes unchanged), OCI media types. Deterministic bytes,
    so converting twice gives the same digest. InvalidArgument if ``data`` is not a
    manifest."""
    doc = _load(desc, data)
    config = doc.get("config")
    layers = doc.get("layers")
    if not isinstance(config, Mapping) or not isinstance(layers, list):
        raise errdefs.InvalidArgument(f"manifest {desc.digest} has no config or layers")
    out: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _oci_descriptor(config),
        "layers": [_oci_descriptor(layer) for layer in layers if isinstance(layer, Mapping)],
    }
    if isinstance(doc.get("annotations"), Mapping):
        out["annotations"] = doc["annotations"]
    return _dump(out)


def oci_index(entries: Sequence[Mapping[str, object]]) -> bytes:
    """An OCI image index over ``entries`` (descriptor objects, platforms kept, media
    types mapped to OCI). Deterministic bytes."""
    return _dump(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [_oci_descriptor(e) for e in entries],
        }
    )


def append_distribution_source(current: str | None, repo: str) -> str:
    """containerd's label value update: the sorted, de-duplicated comma list of repos."""
    repos = {r for r in (current or "").split(",") if r}
    repos.add(repo)
    return ",".join(sorted(repos))


def distribution_source_key(host: str) -> str:
    """``containerd.io/distribution.source.<host>``."""
    return DISTRIBUTION_SOURCE_PREFIX + host


def verify(data: bytes, desc: Descriptor, what: str) -> None:
    """Raise DataLoss unless ``data`` has ``desc``'s size (when known) and digest."""
    if desc.size and len(data) != desc.size:
        raise errdefs.DataLoss(f"{what}: got {len(data)} bytes, expected {desc.size}")
    actual = Digest.from_bytes(data, desc.digest.algorithm)
    if actual != desc.digest:
        raise errdefs.DataLoss(f"{what}: content hashes to {actual}, expected {desc.digest}")


__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "GC_REF_PREFIX",
    "MANIFEST_ACCEPT",
    "OCI_CONFIG",
    "OCI_EQUIVALENTS",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Index",
    "Manifest",
    "append_distribution_source",
    "distribution_source_key",
    "index_gc_labels",
    "is_index",
    "is_layer",
    "is_manifest",
    "oci_index",
    "oci_manifest",
    "parse",
    "ref_key",
    "sniff_media_type",
    "verify",
]
