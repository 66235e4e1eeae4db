"""OCI distribution registries as a source: manifests, blobs, and whole images.

* :class:`RegistryClient` speaks the registry HTTP API (Part B) on the one HTTP layer
  (:mod:`ingestq.fetch.httpio`): manifest ``HEAD`` / ``GET`` with the four schema 2
  types in ``Accept``, blob ``GET`` with ``Range`` for resume, redirects to blob
  storage followed (httpx drops ``Authorization`` on a hop to another origin),
  Bearer/Basic auth through :class:`~ingestq.fetch.registry.auth.RegistryAuth`,
  ``Retry-After`` honoured in place for 429/503 up to a bound, every failure an errdefs
  kind (:mod:`ingestq.fetch.registry.errors`).
* :class:`RegistryBlobSource` is a :class:`~ingestq.fetch.source.Source` for one blob
  (``HOST[:PORT]/REPO@DIGEST``); the store verifies digest and size at commit.
* :class:`RegistryImage` resolves ``HOST/REPO:TAG`` or ``@DIGEST`` for a pull and hands
  out verified manifests and blob sources.
* :func:`source_from_registry_spec` is the factory of ``{"type": "registry"}`` source
  specs (registered by :mod:`ingestq.fetch.specs`).

Plain HTTP is used for loopback hosts, or for every host with ``plain_http``; TLS
verification takes a CA bundle, a client certificate, or ``insecure_skip_verify``. A
TLS failure (an untrusted certificate, an ``https://`` registry that speaks plain HTTP)
is FailedPrecondition, permanent.

Resume and ``416`` (B2), by :func:`ingestq.fetch.httpio.open_range`: a
``Range: bytes=<offset>-`` request answered ``206`` must start at ``offset`` or it is
FailedPrecondition ("unhandled content range"); a ``200`` means "from 0"; a ``416`` is
closed without reading its body (distribution 2.8 announces the full blob length but
sends 33 bytes) and read as "offset ≥ size": an empty stream at ``offset`` when the
total equals the offset (the store's commit then verifies the bytes held), otherwise a
fresh fetch from 0. A size the registry announces (Content-Length, the Content-Range
total) that differs from the descriptor's is DataLoss. Blob bodies follow curl's
low-speed rule (:class:`~ingestq.fetch.httpio.LowSpeed`; a spec's source takes it from
:attr:`FetchOptions.low_speed <ingestq.fetch.options.FetchOptions.low_speed>`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from ingestq import errdefs
from ingestq.fetch import httpio, manifests
from ingestq.fetch.options import FetchOptions
from ingestq.fetch.reference import Reference, parse_blob_reference, parse_reference
from ingestq.fetch.registry.auth import (
    ChainCredentials,
    Credentials,
    DockerConfigCredentials,
    RegistryAuth,
    StaticCredentials,
)
from ingestq.fetch.registry.errors import error_from_response
from ingestq.fetch.registry.options import SPEC_KIND, RegistryOptions
from ingestq.fetch.source import BytesStream, Opened, Source
from ingestq.store.digest import Digest
from ingestq.store.values import Descriptor

#: Largest manifest or index accepted (containerd's limit).
MAX_MANIFEST_SIZE = 4 << 20
#: Seconds a manifest's body may take to arrive (a registry trickling it is Unavailable).
MANIFEST_TIME = 120.0


def _media_type(response: httpx.Response) -> str:
    value: str = response.headers.get("content-type", "")
    return value.split(";", 1)[0].strip().lower()


class RegistryClient:
    """A registry API client: one connection pool and one token cache for any number of
    registries and threads.

    Args:
        options: how to reach registries.
        credentials: where credentials come from; None means the docker config files
            named by ``options.auth_files`` (or the default places).
        transport: an httpx transport (tests); None for the network (see
            :func:`ingestq.fetch.httpio.new_client`).
        sleep: how ``Retry-After`` waits (injectable).
    """

    def __init__(
        self,
        options: RegistryOptions | None = None,
        credentials: Credentials | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.options = options or RegistryOptions()
        if credentials is None:
            credentials = DockerConfigCredentials(self.options.auth_files)
        self.auth = RegistryAuth(credentials)
        self._sleep = sleep
        o = self.options
        verify = httpio.ssl_context(
            ca_bundle=o.ca_bundle,
            client_cert=o.client_cert,
            client_key=o.client_key,
            insecure_skip_verify=o.insecure_skip_verify,
        )
        self._http = httpio.new_client(
            connect_timeout=o.connect_timeout,
            read_timeout=o.read_timeout,
            max_redirects=o.max_redirects,
            verify=verify,
            auth=self.auth,
            transport=transport,
        )

    def close(self) -> None:
        """Close every connection."""
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- URLs ---------------------------------------------------------------------------
    def base_url(self, ref: Reference) -> str:
        """``http(s)://<api host>`` for ``ref``'s registry."""
        plain = self.options.plain_http
        scheme = "http" if plain or (plain is None and ref.is_loopback) else "https"
        return f"{scheme}://{ref.api_host}"

    def _url(self, ref: Reference, kind: str, obj: str) -> str:
        return f"{self.base_url(ref)}/v2/{ref.path}/{kind}/{obj}"

    # -- sending ------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        what: str,
        extensions: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """Send with streaming, retrying 429/503 + Retry-After in place (bounded)."""
        attempt = 0
        while True:
            response = httpio.send(self._http, method, url, headers, what, extensions)
            if response.status_code in (429, 503) and attempt < self.options.retries:
                delay = httpio.retry_after(response.headers.get("Retry-After"))
                if delay is not None and delay <= self.options.max_retry_wait:
                    response.close()
                    attempt += 1
                    self._sleep(delay)
                    continue
            return response

    def _fail(self, response: httpx.Response, what: str) -> errdefs.ErrdefsError:
        try:
            return error_from_response(response, what)
        finally:
            response.close()

    # -- manifests ----------------------------------------------------------------------
    def resolve(self, ref: Reference) -> Descriptor:
        """The descriptor (media type, digest, size) of ``ref``'s manifest or index.

        ``HEAD`` first; a registry that does not answer it with a digest and a known
        type is asked with ``GET`` (and the body hashed). For a digest reference the
        registry's digest must agree.

        Raises NotFound (unknown tag, digest or repository), Unauthenticated,
        PermissionDenied, Unavailable, Unimplemented (a type that is not a manifest),
        DataLoss (the registry's digest disagrees).
        """
        what = f"resolve {ref}"
        url = self._url(ref, "manifests", ref.object)
        headers = {"Accept": manifests.MANIFEST_ACCEPT}
        response = self._send("HEAD", url, headers, what)
        response.close()
        media_type = _media_type(response)
        header_digest = _header_digest(response)
        length = httpio.int_header(response, "content-length")
        if (
            response.status_code == 200
            and header_digest is not None
            and length is not None
            and (manifests.is_index(media_type) or manifests.is_manifest(media_type))
        ):
            digest = header_digest
            if ref.digest is not None and digest != ref.digest:
                raise errdefs.DataLoss(
                    f"{what}: registry reports digest {digest}, expected {ref.digest}"
                )
            return Descriptor(digest=digest, size=length, media_type=media_type)
        data, media_type = self._get_manifest(ref, ref.object, what)
        digest = Digest.from_bytes(data, ref.digest.algorithm if ref.digest else "sha256")
        if ref.digest is not None and digest != ref.digest:
            raise errdefs.DataLoss(f"{what}: manifest body hashes to {digest}, not {ref.digest}")
        return Descriptor(digest=digest, size=len(data), media_type=media_type)

    def _get_manifest(self, ref: Reference, obj: str, what: str) -> tuple[bytes, str]:
        url = self._url(ref, "manifests", obj)
        response = self._send(
            "GET", url, {"Accept": manifests.MANIFEST_ACCEPT}, what,
            httpio.small_body(MAX_MANIFEST_SIZE, MANIFEST_TIME),
        )  # fmt: skip
        if response.status_code != 200:
            raise self._fail(response, what)
        try:
            declared = httpio.int_header(response, "content-length")
            if declared is not None and declared > MAX_MANIFEST_SIZE:
                raise errdefs.ResourceExhausted(
                    f"{what}: manifest of {declared} bytes exceeds {MAX_MANIFEST_SIZE}"
                )
            parts: list[bytes] = []
            total = 0
            for chunk in response.iter_bytes():
                total += len(chunk)
                if total > MAX_MANIFEST_SIZE:
                    raise errdefs.ResourceExhausted(
                        f"{what}: manifest exceeds {MAX_MANIFEST_SIZE} bytes"
                    )
                parts.append(chunk)
        except httpx.HTTPError as e:
            raise httpio.transport_error(e, what) from e
        finally:
            response.close()
        data = b"".join(parts)
        media_type = _media_type(response)
        if not (manifests.is_index(media_type) or manifests.is_manifest(media_type)):
            sniffed = manifests.sniff_media_type(data)
            if media_type in manifests.DOCKER_SCHEMA1 or sniffed in manifests.DOCKER_SCHEMA1:
                raise errdefs.Unimplemented(f"{what}: Docker schema 1 manifests not supported")
            if sniffed is None:
                raise errdefs.Unimplemented(f"{what}: unsupported media type {media_type!r}")
            media_type = sniffed
        return data, media_type

    def fetch_manifest(self, ref: Reference, desc: Descriptor) -> bytes:
        """The bytes of the manifest or index ``desc`` of ``ref``'s repository, verified.

        Raises DataLoss when the body's size or digest differs from ``desc`` (and the
        errors of :meth:`resolve`).
        """
        what = f"fetch manifest {ref.name}@{desc.digest}"
        data, _media_type_seen = self._get_manifest(ref, str(desc.digest), what)
        manifests.verify(data, desc, what)
        return data

    def open_manifest(self, ref: Reference, desc: Descriptor, offset: int = 0) -> Opened:
        """A manifest as a stream from 0 (manifests are small; no Range)."""
        data = self.fetch_manifest(ref, desc)
        return Opened(BytesStream(data), 0, len(data))

    # -- blobs --------------------------------------------------------------------------
    def open_blob(
        self,
        ref: Reference,
        desc: Descriptor,
        offset: int = 0,
        *,
        low_speed: httpio.LowSpeed = httpio.DEFAULT_LOW_SPEED,
    ) -> Opened:
        """Open blob ``desc`` of ``ref``'s repository at ``offset`` (see the module
        docstring for Range, 206, 200 and 416); the body follows ``low_speed``.

        Raises NotFound (BLOB_UNKNOWN), Unauthenticated, PermissionDenied, Unavailable
        (network, 5xx, 429, a body slower than ``low_speed``), DataLoss (the registry's
        size differs from ``desc.size``).
        """
        what = f"fetch blob {ref.name}@{desc.digest}"
        url = self._url(ref, "blobs", str(desc.digest))

        def get(start: int) -> httpx.Response:
            return self._send("GET", url, httpio.range_headers(start), what)

        opened = httpio.open_range(
            get, offset, what, fail=lambda r: self._fail(r, what), decode=True, low_speed=low_speed
        ).opened
        if opened.size is None:
            return Opened(opened.stream, opened.start, desc.size or None)
        if desc.size and opened.size != desc.size:
            opened.stream.close()
            raise errdefs.DataLoss(
                f"{what}: registry serves {opened.size} bytes, expected {desc.size}"
            )
        return opened

    def blob_exists(self, ref: Reference, desc: Descriptor) -> bool:
        """``HEAD`` the blob: True on 200, False on 404; other failures raise."""
        response, what = _blob_head(self, ref, desc)
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise error_from_response(response, what, b"")

    def blob_size(self, ref: Reference, desc: Descriptor) -> int:
        """The blob's size from ``HEAD`` (``Content-Length``).

        NotFound for an unknown blob, DataLoss when it differs from ``desc.size``.
        """
        response, what = _blob_head(self, ref, desc)
        if response.status_code != 200:
            raise error_from_response(response, what, b"")
        length = httpio.int_header(response, "content-length")
        if length is None:
            raise errdefs.Unimplemented(f"{what}: registry sent no Content-Length")
        if desc.size and length != desc.size:
            raise errdefs.DataLoss(f"{what}: registry serves {length} bytes, expected {desc.size}")
        return length


def _header_digest(response: httpx.Response) -> Digest | None:
    """The ``Docker-Content-Digest`` of ``response``; None when it is missing or
    malformed (the manifest is then fetched and hashed, as without one)."""
    value = response.headers.get("docker-content-digest")
    if not value:
        return None
    try:
        return Digest.parse(value)
    except errdefs.InvalidArgument:
        return None


def _blob_head(
    client: RegistryClient, ref: Reference, desc: Descriptor
) -> tuple[httpx.Response, str]:
    what = f"stat blob {ref.name}@{desc.digest}"
    url = client._url(ref, "blobs", str(desc.digest))
    response = client._send("HEAD", url, {"Accept-Encoding": "identity"}, what)
    response.close()
    return response, what


class RegistryBlobSource:
    """One blob (or manifest, by media type) of a repository, as a Source.

    ``name`` is ``HOST/REPO@DIGEST``. Opening at an offset uses Range (see
    :meth:`RegistryClient.open_blob`, with ``low_speed``); manifests and indexes are
    always read from 0.
    """

    def __init__(
        self,
        client: RegistryClient,
        ref: Reference,
        desc: Descriptor,
        *,
        low_speed: httpio.LowSpeed = httpio.DEFAULT_LOW_SPEED,
    ) -> None:
        self._client = client
        self._ref = ref.blob(desc.digest)
        self._desc = desc
        self._low_speed = low_speed

    @property
    def name(self) -> str:
        return str(self._ref)

    @property
    def descriptor(self) -> Descriptor:
        """The blob's descriptor."""
        return self._desc

    def open(self, offset: int = 0) -> Opened:
        if manifests.is_index(self._desc.media_type) or manifests.is_manifest(
            self._desc.media_type
        ):
            return self._client.open_manifest(self._ref, self._desc, offset)
        return self._client.open_blob(self._ref, self._desc, offset, low_speed=self._low_speed)


class RegistryImage:
    """An image (``HOST/REPO:TAG`` or ``@DIGEST``) in a registry, for a pull.

    Attributes:
        ref: the normalised reference.
    """

    kind = SPEC_KIND

    def __init__(self, client: RegistryClient, ref: Reference | str) -> None:
        self.client = client
        self.ref = parse_reference(ref) if isinstance(ref, str) else ref

    @property
    def name(self) -> str:
        """The fully qualified reference (``docker.io/library/ubuntu:latest``)."""
        return str(self.ref)

    @property
    def distribution_source(self) -> tuple[str, str]:
        """(host, repository) for containerd's ``distribution.source`` label."""
        return self.ref.domain, self.ref.path

    def resolve(self) -> Descriptor:
        """The root descriptor; see :meth:`RegistryClient.resolve`."""
        return self.client.resolve(self.ref)

    def fetch_manifest(self, desc: Descriptor) -> bytes:
        """A verified manifest or index of this repository."""
        return self.client.fetch_manifest(self.ref, desc)

    def blob_source(self, desc: Descriptor) -> RegistryBlobSource:
        """A Source for any blob of this repository."""
        return RegistryBlobSource(self.client, self.ref, desc)

    def spec(self, desc: Descriptor) -> dict[str, Any]:
        """The job-argument form of :meth:`blob_source` (see :func:`source_from_spec`)."""
        return blob_spec(self.ref, desc, self.client.options)


_CLIENTS: dict[RegistryOptions, RegistryClient] = {}
_CLIENTS_LOCK = threading.Lock()


def shared_client(options: RegistryOptions | None = None) -> RegistryClient:
    """One :class:`RegistryClient` per distinct options in this process (connections and
    tokens are reused by every job of a worker). Credentials come from the docker
    config files of ``options``."""
    options = options or RegistryOptions()
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(options)
        if client is None:
            client = RegistryClient(options)
            _CLIENTS[options] = client
        return client


def blob_source(
    text: str,
    desc: Descriptor | None = None,
    options: RegistryOptions | None = None,
    *,
    low_speed: httpio.LowSpeed = httpio.DEFAULT_LOW_SPEED,
) -> RegistryBlobSource:
    """A Source for ``HOST[:PORT]/REPO@DIGEST``. ``desc`` adds size and media type (a
    manifest type makes the source fetch from the manifests endpoint); ``low_speed`` is
    the body's low-speed rule."""
    ref = parse_blob_reference(text)
    assert ref.digest is not None
    if desc is None:
        desc = Descriptor(digest=ref.digest)
    elif desc.digest != ref.digest:
        raise errdefs.InvalidArgument(f"{text}: descriptor digest {desc.digest} differs")
    return RegistryBlobSource(shared_client(options), ref, desc, low_speed=low_speed)


def blob_spec(ref: Reference, desc: Descriptor, options: RegistryOptions) -> dict[str, Any]:
    """The source spec of blob ``desc`` of ``ref``'s repository: ``{"type": "registry",
    "ref": "HOST/REPO@DIGEST", "size", "media_type", "options"}`` (no secrets: workers
    take credentials from their own docker config files)."""
    return {
        "type": RegistryImage.kind,
        "ref": str(ref.blob(desc.digest)),
        "size": desc.size,
        "media_type": desc.media_type,
        "options": options.to_dict(),
    }


def source_from_registry_spec(spec: Mapping[str, Any], options: FetchOptions) -> Source:
    """The Source of a ``{"type": "registry", ...}`` spec (see :func:`blob_spec`); how
    to reach the registry travels in the spec (``options``); of the process's
    :class:`~ingestq.fetch.options.FetchOptions` only the low-speed rule is used.

    InvalidArgument for a malformed reference, size or options.
    """
    size = spec.get("size", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise errdefs.InvalidArgument(f"registry source size {size!r} is not a natural number")
    text = spec.get("ref")
    if not isinstance(text, str):
        raise errdefs.InvalidArgument(f"registry source needs a ref, got {text!r}")
    ref = parse_blob_reference(text)
    assert ref.digest is not None
    media_type = str(spec.get("media_type") or "application/octet-stream")
    registry = RegistryOptions.from_dict(spec.get("options"))
    desc = Descriptor(digest=ref.digest, size=size, media_type=media_type)
    return blob_source(text, desc, registry, low_speed=options.low_speed)


def credentials_from_mapping(entries: Mapping[str, tuple[str, str]]) -> Credentials:
    """Static credentials ``{host: (user, password)}`` chained before the docker config."""
    from ingestq.fetch.registry.auth import Credential

    static = StaticCredentials({h: Credential(u, p) for h, (u, p) in entries.items()})
    return ChainCredentials([static, DockerConfigCredentials()])


__all__ = [
    "MAX_MANIFEST_SIZE",
    "RegistryBlobSource",
    "RegistryClient",
    "RegistryImage",
    "RegistryOptions",
    "blob_source",
    "blob_spec",
    "credentials_from_mapping",
    "shared_client",
    "source_from_registry_spec",
]
