"""Build OCI / Docker images in memory, push them over the registry HTTP API, write layouts.

Pushing uses only the distribution API (monolithic ``POST`` + ``PUT ?digest=`` blob
uploads, ``PUT`` of manifests and indexes), so it needs no skopeo and works against any
registry that has ``url`` and ``auth_headers()`` (see :class:`RegistryEndpoint`).

Typical use::

    digest = push_image(registry, "app", "v1", [b"layer one", b"layer two"])
    index = push_index(registry, "multi", "v1", [
        build_image([b"amd64 layer"], platform=Platform("linux", "amd64")),
        build_image([b"arm64 layer"], platform=Platform("linux", "arm64")),
    ])
    make_oci_layout(tmp_path / "layout", "v1", [b"layer"])
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

#: The four manifest/index types a puller should send in ``Accept`` (see Part B3).
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])

#: The annotation that names a manifest's tag in an OCI layout's ``index.json``.
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

Flavor = Literal["oci", "docker"]


class RegistryEndpoint(Protocol):
    """What the push helpers need from a registry handle (e.g. :class:`Registry`)."""

    @property
    def url(self) -> str:
        """Base URL, ``http://host:port``."""
        ...

    def auth_headers(self) -> dict[str, str]:
        """Headers that authorize a request."""
        ...


class PushError(RuntimeError):
    """The registry answered a push request with an unexpected status."""

    def __init__(self, what: str, response: httpx.Response) -> None:
        super().__init__(
            f"{what}: {response.request.method} {response.request.url} -> "
            f"{response.status_code} {response.text[:500]}"
        )
        self.response = response


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass(frozen=True)
class Platform:
    """An image platform, as in an index's ``platform`` field."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def to_json(self) -> dict[str, str]:
        """The OCI JSON form."""
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant is not None:
            out["variant"] = self.variant
        return out


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, media_type: str, data: bytes, **kwargs: Any) -> Descriptor:
        """The descriptor of ``data`` (digest and size computed)."""
        return cls(media_type, sha256_digest(data), len(data), **kwargs)

    def to_json(self) -> dict[str, Any]:
        """The OCI JSON form (``mediaType``, ``digest``, ``size``, ...)."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Image:
    """A built image: manifest, config and layers, as bytes and descriptors."""

    manifest: bytes
    descriptor: Descriptor
    config: bytes
    config_descriptor: Descriptor
    layers: tuple[bytes, ...]
    layer_descriptors: tuple[Descriptor, ...]

    @property
    def digest(self) -> str:
        """The manifest digest."""
        return self.descriptor.digest

    def blobs(self) -> dict[str, bytes]:
        """Config and layer blobs by digest (the manifest is not a blob)."""
        out = {self.config_descriptor.digest: self.config}
        for desc, data in zip(self.layer_descriptors, self.layers, strict=True):
            out[desc.digest] = data
        return out


@dataclass(frozen=True)
class Index:
    """A built image index (OCI) or manifest list (Docker) and the images it lists."""

    manifest: bytes
    descriptor: Descriptor
    images: tuple[Image, ...]

    @property
    def digest(self) -> str:
        """The index digest."""
        return self.descriptor.digest


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2).encode()


def _diff_id(layer: bytes, media_type: str) -> str:
    if "gzip" in media_type:
        try:
            return sha256_digest(gzip.decompress(layer))
        except (OSError, EOFError):
            pass
    return sha256_digest(layer)


def make_tar_layer(files: Mapping[str, bytes], *, compress: bool = False) -> bytes:
    """A deterministic tar (optionally gzip) layer holding ``files`` (path -> content)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    data = buf.getvalue()
    return gzip.compress(data, mtime=0) if compress else data


def build_image(
    layers: Sequence[bytes],
    config: bytes | None = None,
    *,
    platform: Platform | None = None,
    flavor: Flavor = "oci",
    layer_media_type: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Image:
    """Build an image manifest over ``layers`` without any I/O.

    Args:
        layers: layer blobs, used as given (any bytes; see :func:`make_tar_layer`).
        config: config blob; None generates a minimal config for ``platform`` whose
            ``rootfs.diff_ids`` hash the layers (gunzipped when the type says gzip).
        platform: put in the config and in :attr:`Image.descriptor` (for indexes);
            defaults to linux/amd64.
        flavor: ``"oci"`` (OCI media types) or ``"docker"`` (Docker schema2 types).
        layer_media_type: overrides the layer type (default ``OCI_LAYER`` for oci,
            ``DOCKER_LAYER`` for docker).
        annotations: manifest annotations (OCI only).
    """
    platform = platform or Platform()
    if flavor == "oci":
        manifest_type, config_type, default_layer = OCI_MANIFEST, OCI_CONFIG, OCI_LAYER
    else:
        manifest_type, config_type, default_layer = DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER
    layer_type = layer_media_type or default_layer
    if config is None:
        config_json: dict[str, Any] = {
            **platform.to_json(),
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [_diff_id(x, layer_type) for x in layers]},
        }
        config = _json_bytes(config_json)
    config_desc = Descriptor.of(config_type, config)
    layer_descs = tuple(Descriptor.of(layer_type, data) for data in layers)
    manifest_json: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config_desc.to_json(),
        "layers": [d.to_json() for d in layer_descs],
    }
    if annotations and flavor == "oci":
        manifest_json["annotations"] = dict(annotations)
    manifest = _json_bytes(manifest_json)
    return Image(
        manifest=manifest,
        descriptor=Descriptor.of(manifest_type, manifest, platform=platform),
        config=config,
        config_descriptor=config_desc,
        layers=tuple(layers),
        layer_descriptors=layer_descs,
    )


def build_index(images: Sequence[Image], *, flavor: Flavor = "oci") -> Index:
    """Build an OCI index (or a Docker manifest list) over ``images``, without I/O."""
    media_type = OCI_INDEX if flavor == "oci" else DOCKER_MANIFEST_LIST
    body = _json_bytes(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [image.descriptor.to_json() for image in images],
        }
    )
    return Index(manifest=body, descriptor=Descriptor.of(media_type, body), images=tuple(images))


def _client(registry: RegistryEndpoint, client: httpx.Client | None) -> httpx.Client:
    if client is not None:
        return client
    return httpx.Client(headers=registry.auth_headers(), timeout=60.0)


def push_blob(
    registry: RegistryEndpoint, repo: str, data: bytes, *, client: httpx.Client | None = None
) -> str:
    """Upload ``data`` as a blob of ``repo`` (monolithic POST + PUT) and return its digest.

    Raises:
        PushError: the registry did not answer 202 to the POST or 201 to the PUT.
    """
    digest = sha256_digest(data)
    http = _client(registry, client)
    try:
        started = http.post(f"{registry.url}/v2/{repo}/blobs/uploads/")
        if started.status_code != 202:
            raise PushError(f"start upload of {digest}", started)
        location = urllib.parse.urljoin(f"{registry.url}/", started.headers["location"])
        upload_url = httpx.URL(location).copy_merge_params({"digest": digest})
        done = http.put(
            upload_url,
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if done.status_code != 201:
            raise PushError(f"finish upload of {digest}", done)
    finally:
        if client is None:
            http.close()
    return digest


def push_manifest(
    registry: RegistryEndpoint,
    repo: str,
    reference: str,
    body: bytes,
    media_type: str,
    *,
    client: httpx.Client | None = None,
) -> str:
    """PUT ``body`` as ``/v2/<repo>/manifests/<reference>`` (a tag or its digest).

    Returns the manifest digest, checked against the registry's
    ``Docker-Content-Digest``.
    """
    digest = sha256_digest(body)
    http = _client(registry, client)
    try:
        response = http.put(
            f"{registry.url}/v2/{repo}/manifests/{reference}",
            content=body,
            headers={"Content-Type": media_type},
        )
    finally:
        if client is None:
            http.close()
    if response.status_code != 201:
        raise PushError(f"put manifest {repo}:{reference}", response)
    served = response.headers.get("docker-content-digest")
    if served is not None and served != digest:
        raise PushError(f"registry digest {served} differs from {digest}", response)
    return digest


def push_built_image(
    registry: RegistryEndpoint,
    repo: str,
    image: Image,
    tag: str | None = None,
    *,
    client: httpx.Client | None = None,
) -> str:
    """Push an :class:`Image`'s blobs and manifest (under ``tag``, or by digest only).

    Returns the manifest digest.
    """
    http = _client(registry, client)
    try:
        for data in image.blobs().values():
            push_blob(registry, repo, data, client=http)
        return push_manifest(
            registry,
            repo,
            tag or image.digest,
            image.manifest,
            image.descriptor.media_type,
            client=http,
        )
    finally:
        if client is None:
            http.close()


def push_image(
    registry: RegistryEndpoint,
    repo: str,
    tag: str | None,
    layers: Sequence[bytes],
    config: bytes | None = None,
    *,
    platform: Platform | None = None,
    flavor: Flavor = "oci",
    layer_media_type: str | None = None,
    client: httpx.Client | None = None,
) -> str:
    """Build an image (see :func:`build_image`) and push it; return the manifest digest.

    ``tag=None`` pushes the manifest by digest only.
    """
    image = build_image(
        layers, config, platform=platform, flavor=flavor, layer_media_type=layer_media_type
    )
    return push_built_image(registry, repo, image, tag, client=client)


def push_index(
    registry: RegistryEndpoint,
    repo: str,
    tag: str | None,
    images: Sequence[Image],
    *,
    flavor: Flavor = "oci",
    client: httpx.Client | None = None,
) -> str:
    """Push each image (by digest), then an index over them under ``tag``.

    Build the images with :func:`build_image` and a ``platform`` each; use the same
    ``flavor`` for images and index. Returns the index digest.
    """
    index = build_index(images, flavor=flavor)
    http = _client(registry, client)
    try:
        for image in images:
            push_built_image(registry, repo, image, client=http)
        return push_manifest(
            registry,
            repo,
            tag or index.digest,
            index.manifest,
            index.descriptor.media_type,
            client=http,
        )
    finally:
        if client is None:
            http.close()


def _write_blob(blobs_dir: Path, data: bytes) -> None:
    digest = sha256_digest(data)
    path = blobs_dir / digest.split(":", 1)[1]
    if not path.exists():
        path.write_bytes(data)


def add_to_oci_layout(directory: Path, content: Image | Index, tag: str | None) -> Descriptor:
    """Write ``content``'s blobs into an OCI image layout and list it in ``index.json``.

    Creates the layout (``oci-layout``, ``index.json``, ``blobs/sha256``) if missing.
    With ``tag``, the ``index.json`` entry carries ``org.opencontainers.image.ref.name``
    (replacing an entry with the same tag), so ``skopeo ... oci:DIR:TAG`` finds it.
    Returns the descriptor written to ``index.json``.
    """
    blobs_dir = directory / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    images: Iterable[Image] = content.images if isinstance(content, Index) else (content,)
    for image in images:
        for data in (*image.blobs().values(), image.manifest):
            _write_blob(blobs_dir, data)
    _write_blob(blobs_dir, content.manifest)

    index_path = directory / "index.json"
    if index_path.exists():
        index = json.loads(index_path.read_text())
    else:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    annotations = {REF_NAME_ANNOTATION: tag} if tag is not None else {}
    base = content.descriptor
    entry = Descriptor(base.media_type, base.digest, base.size, annotations=annotations)
    manifests = [
        m
        for m in index["manifests"]
        if tag is None or m.get("annotations", {}).get(REF_NAME_ANNOTATION) != tag
    ]
    manifests.append(entry.to_json())
    index["manifests"] = manifests
    index_path.write_text(json.dumps(index, indent=2))
    return entry


def make_oci_layout(
    directory: Path,
    tag: str,
    layers: Sequence[bytes],
    config: bytes | None = None,
    *,
    platform: Platform | None = None,
    flavor: Flavor = "oci",
    layer_media_type: str | None = None,
) -> str:
    """Write a one-image OCI image layout at ``directory`` tagged ``tag``.

    The layout is readable as ``oci:DIRECTORY:TAG`` by skopeo. An existing layout gains
    one more entry. Returns the manifest digest.
    """
    image = build_image(
        layers, config, platform=platform, flavor=flavor, layer_media_type=layer_media_type
    )
    return add_to_oci_layout(directory, image, tag).digest
