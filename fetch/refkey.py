"""Default ingest refs, after containerd's ``remotes.MakeRefKey``.

With a digest the key is the digest, or ``<ref.name annotation>@<digest>``, prefixed
by media type: ``manifest-``, ``index-``, ``layer-``, ``config-``, and ``blob-`` for
anything else (containerd says ``unknown-``; ingestq's plain blobs read better as
``blob-sha256:...``). Without a digest (the bytes are hashed while fetching) the ref
names the source: ``source-<sha256 of the URL or path>``, so two ingests of the same
URL share one ingest (and resume each other).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from ingestq.store.annotations import REF_NAME as REF_NAME_ANNOTATION
from ingestq.store.digest import Digest

_MANIFESTS = {
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
}
_INDEXES = {
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
}
_CONFIGS = {
    "application/vnd.docker.container.image.v1+json",
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.containerd.container.criu.checkpoint.criu.tar",
    "application/vnd.containerd.container.checkpoint.config.v1+proto",
}
_DOCKER_LAYERS = {
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}


def prefix_for(media_type: str) -> str:
    """The ref prefix of a media type (``layer``, ``manifest``, ... or ``blob``)."""
    if media_type in _MANIFESTS:
        return "manifest"
    if media_type in _INDEXES:
        return "index"
    if media_type.startswith("application/vnd.oci.image.layer.") or media_type in _DOCKER_LAYERS:
        return "layer"
    if media_type in _CONFIGS:
        return "config"
    return "blob"


def make_ref_key(
    digest: Digest, media_type: str = "", annotations: Mapping[str, str] | None = None
) -> str:
    """containerd's MakeRefKey: ``<prefix>-[<ref.name>@]<digest>``."""
    key = str(digest)
    name = (annotations or {}).get(REF_NAME_ANNOTATION)
    if name:
        key = f"{name}@{key}"
    return f"{prefix_for(media_type)}-{key}"


def source_ref(source_name: str) -> str:
    """The ref of an ingest whose digest is unknown: ``source-<sha256(name)>``."""
    return "source-" + hashlib.sha256(source_name.encode("utf-8", "surrogatepass")).hexdigest()
