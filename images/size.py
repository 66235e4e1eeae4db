"""What a recorded image holds and weighs: :func:`tree_size` walks an image's tree of
committed blobs (index → manifests → config and layers), and :func:`list_images`
summarises every image the store's ``index.json`` records (what ``ingestq images``
shows)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ingestq import errdefs
from ingestq.fetch import manifests, platforms
from ingestq.ingest.protocols import LocalContent
from ingestq.store.annotations import SOURCE_DIGEST, SOURCE_MEDIA_TYPE
from ingestq.store.digest import Digest
from ingestq.store.helpers import read_blob
from ingestq.store.images import image_index_of
from ingestq.store.values import Descriptor

#: How deep an index may nest inside another before the walk gives up.
MAX_DEPTH = 4


@dataclass(frozen=True)
class TreeSize:
    """Bytes of every blob of an image (its root included) and the platforms of its
    manifests (``os/arch[/variant]``, in walk order, repeats possible)."""

    size: int
    platforms: tuple[str, ...]


def tree_size(store: LocalContent, desc: Descriptor, depth: int = 0) -> TreeSize | None:
    """The size and platforms of the image rooted at ``desc``, or None when its root, a
    manifest's config or layer is not committed (or the index nests deeper than
    :data:`MAX_DEPTH`). The manifests of an index that are not committed (platforms
    not pulled) are left out. A manifest's platform comes from its index entry, else
    from its config (left out when the config is unreadable). Each manifest is read
    once, however many times indexes list it.

    Raises DataLoss for a committed blob damaged on disk, InvalidArgument /
    Unimplemented for a malformed or unsupported manifest.
    """
    return _tree_size(store, desc, depth, {})


def _tree_size(
    store: LocalContent,
    desc: Descriptor,
    depth: int,
    sizes: dict[tuple[Digest, int], TreeSize | None],
) -> TreeSize | None:
    """:func:`tree_size`, remembering each (digest, depth) result in ``sizes``."""
    key = (desc.digest, depth)
    if key not in sizes:
        sizes[key] = _measure(store, desc, depth, sizes)
    return sizes[key]


def _measure(
    store: LocalContent,
    desc: Descriptor,
    depth: int,
    sizes: dict[tuple[Digest, int], TreeSize | None],
) -> TreeSize | None:
    if depth > MAX_DEPTH or not store.exists(desc.digest):
        return None
    doc = manifests.parse(desc, read_blob(store, desc))
    total = desc.size
    found: list[str] = []
    if isinstance(doc, manifests.Index):
        for entry in doc.manifests:
            child = Descriptor.from_oci(entry)
            if not store.exists(child.digest):
                continue
            sub = _tree_size(store, child, depth + 1, sizes)
            if sub is None:
                continue
            total += sub.size
            plat = platforms.descriptor_platform(entry)
            found.extend([str(plat)] if plat is not None else sub.platforms)
        return TreeSize(total, tuple(found))
    for child in doc.children:
        if not store.exists(child.digest):
            return None
        total += child.size
    try:
        config = json.loads(read_blob(store, doc.config))
        found.append(f"{config.get('os', '?')}/{config.get('architecture', '?')}")
    except (ValueError, errdefs.ErrdefsError):
        pass
    return TreeSize(total, tuple(found))


@dataclass(frozen=True)
class ImageSummary:
    """One recorded image: its name, its own media type and digest (the registry's,
    also when it is recorded through an OCI view), the digest recorded in
    ``index.json``, its size (None when incomplete or unreadable) and its platforms
    (sorted, each once)."""

    name: str
    media_type: str
    digest: str
    recorded: str
    size: int | None
    platforms: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON object (``ingestq images --json``)."""
        return {
            "name": self.name,
            "media_type": self.media_type,
            "digest": self.digest,
            "recorded": self.recorded,
            "size": self.size,
            "platforms": list(self.platforms),
        }


def list_images(store: LocalContent) -> list[ImageSummary]:
    """Every image the store's ``index.json`` records, in its order, summarised. An
    image whose tree cannot be walked (missing or damaged blobs) has no size and no
    platforms. Raises what reading ``index.json`` raises (DataLoss when malformed)."""
    out: list[ImageSummary] = []
    for name, desc in image_index_of(store, store.root).list():
        try:
            tree = tree_size(store, desc)
        except errdefs.ErrdefsError:
            tree = None
        out.append(
            ImageSummary(
                name=name,
                media_type=desc.annotations.get(SOURCE_MEDIA_TYPE, desc.media_type),
                digest=desc.annotations.get(SOURCE_DIGEST, str(desc.digest)),
                recorded=str(desc.digest),
                size=tree.size if tree else None,
                platforms=tuple(sorted(set(tree.platforms))) if tree else (),
            )
        )
    return out
