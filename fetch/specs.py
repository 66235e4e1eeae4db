"""Source specs: the JSON form a job carries, and how a worker turns it into a Source.

A spec is a JSON object with a ``type``:

* ``{"type": "http", "url": "https://...", "headers": {...}}`` (``headers`` optional);
* ``{"type": "file", "path": "/abs/path"}``;
* ``{"type": "registry", "ref": "HOST/REPO@DIGEST", "size", "media_type", "options"}``
  (:func:`ingestq.fetch.registry.client.blob_spec`).

Factories take the spec and the process's :class:`~ingestq.fetch.options.FetchOptions`
(file roots, HTTP timeouts). Other packages (and tests) add types with
:func:`register`. :func:`spec_from_text` turns what a user typed (a URL or a path) into
a spec.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ingestq import errdefs
from ingestq.fetch.files import FileSource
from ingestq.fetch.options import FetchOptions
from ingestq.fetch.registry.options import SPEC_KIND as REGISTRY_KIND
from ingestq.fetch.source import Source

if TYPE_CHECKING:
    # The HTTP stack (httpx) loads with the first HTTP or registry source, so a
    # producer that only names specs (queues jobs) does not load it.
    import httpx

SourceSpec = dict[str, Any]
Factory = Callable[[Mapping[str, Any], FetchOptions], Source]

_FACTORIES: dict[str, Factory] = {}
_clients: dict[tuple[int, float, float, int], httpx.Client] = {}
_clients_mutex = threading.Lock()


def register(kind: str, factory: Factory) -> None:
    """Make specs of ``type == kind`` resolvable by ``factory(spec, options)``."""
    _FACTORIES[kind] = factory


def http_client(options: FetchOptions) -> httpx.Client:
    """This process's shared httpx client for ``options``' HTTP settings (a new one
    after a fork)."""
    key = (
        os.getpid(),
        options.http_connect_timeout,
        options.http_read_timeout,
        options.http_max_redirects,
    )
    from ingestq.fetch import httpio

    with _clients_mutex:
        client = _clients.get(key)
        if client is None:
            client = httpio.new_client(
                connect_timeout=options.http_connect_timeout,
                read_timeout=options.http_read_timeout,
                max_redirects=options.http_max_redirects,
            )
            _clients[key] = client
        return client


def _http(spec: Mapping[str, Any], options: FetchOptions) -> Source:
    url = spec.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise errdefs.InvalidArgument(f"http source needs an http(s) url, got {url!r}")
    headers = spec.get("headers") or {}
    if not isinstance(headers, Mapping):
        raise errdefs.InvalidArgument("http source headers must be an object")
    from ingestq.fetch.http import HttpSource

    return HttpSource(
        url,
        http_client(options),
        {str(k): str(v) for k, v in headers.items()},
        low_speed=options.low_speed,
    )


def _file(spec: Mapping[str, Any], options: FetchOptions) -> Source:
    path = spec.get("path")
    if not isinstance(path, str) or not path:
        raise errdefs.InvalidArgument(f"file source needs a path, got {path!r}")
    return FileSource(path, options.file_roots)


def _registry(spec: Mapping[str, Any], options: FetchOptions) -> Source:
    from ingestq.fetch.registry.client import source_from_registry_spec

    return source_from_registry_spec(spec, options)


register("http", _http)
register("file", _file)
register(REGISTRY_KIND, _registry)


def source_from_spec(spec: Mapping[str, Any], options: FetchOptions) -> Source:
    """The Source a spec describes. InvalidArgument for an unknown type or bad fields."""
    if not isinstance(spec, Mapping):
        raise errdefs.InvalidArgument("source spec must be an object")
    kind = spec.get("type")
    factory = _FACTORIES.get(kind) if isinstance(kind, str) else None
    if factory is None:
        raise errdefs.InvalidArgument(f"unknown source type {kind!r}")
    return factory(spec, options)


def spec_from_text(text: str, cwd: str | None = None) -> SourceSpec:
    """A spec for a URL (http/https) or a file path (made absolute against ``cwd``).
    InvalidArgument for another scheme."""
    if text.startswith(("http://", "https://")):
        return {"type": "http", "url": text}
    if "://" in text:
        raise errdefs.InvalidArgument(f"unsupported source {text!r} (http(s) URL or file path)")
    if text.startswith("file:"):
        text = text.removeprefix("file://").removeprefix("file:")
    path = text if os.path.isabs(text) else os.path.join(cwd or os.getcwd(), text)
    return {"type": "file", "path": os.path.normpath(path)}


def source_name(spec: Mapping[str, Any]) -> str:
    """A short human name of a spec (its URL or path)."""
    for field in ("url", "path", "reference", "name"):
        value = spec.get(field)
        if isinstance(value, str) and value:
            return value
    return str(spec.get("type", "?"))
