"""Source specs: the JSON form a job carries, and how a worker turns it into a Source.

A spec is a JSON object with a ``type``:

* ``{"type": "http", "url": "https://...", "headers": {...}}`` (``headers`` optional);
* ``{"type": "file", "path": "/abs/path"}``.

Other packages add types with :func:`register` (the registry/pull work registers its
own). :func:`spec_from_text` turns what a user typed (a URL or a path) into a spec.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from ingestq import errdefs
from ingestq.fetch.files import FileSource
from ingestq.fetch.http import HttpSource, new_client
from ingestq.fetch.source import Source
from ingestq.jobs.config import Settings

SourceSpec = dict[str, Any]
Factory = Callable[[Mapping[str, Any], Settings], Source]

_FACTORIES: dict[str, Factory] = {}
_clients: dict[tuple[int, float, float, int], httpx.Client] = {}
_clients_mutex = threading.Lock()


def register(kind: str, factory: Factory) -> None:
    """Make specs of ``type == kind`` resolvable by ``factory(spec, settings)``."""
    _FACTORIES[kind] = factory


def http_client(settings: Settings) -> httpx.Client:
    """This process's shared httpx client for ``settings`` (made after a fork)."""
    key = (
        os.getpid(),
        settings.http_connect_timeout,
        settings.http_read_timeout,
        settings.http_max_redirects,
    )
    with _clients_mutex:
        client = _clients.get(key)
        if client is None:
            client = new_client(
                connect_timeout=settings.http_connect_timeout,
                read_timeout=settings.http_read_timeout,
                max_redirects=settings.http_max_redirects,
            )
            _clients[key] = client
        return client


def _http(spec: Mapping[str, Any], settings: Settings) -> Source:
    url = spec.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise errdefs.InvalidArgument(f"http source needs an http(s) url, got {url!r}")
    headers = spec.get("headers") or {}
    if not isinstance(headers, Mapping):
        raise errdefs.InvalidArgument("http source headers must be an object")
    return HttpSource(url, http_client(settings), {str(k): str(v) for k, v in headers.items()})


def file_roots(settings: Settings) -> tuple[Path, ...] | None:
    """The roots file sources may read: INGESTQ_FILE_ROOTS; when unset, anything in the
    embedded default (the caller's own process) and nothing on a queue worker."""
    if settings.file_roots is not None:
        return settings.file_roots
    return None if not settings.queued else ()


def _file(spec: Mapping[str, Any], settings: Settings) -> Source:
    path = spec.get("path")
    if not isinstance(path, str) or not path:
        raise errdefs.InvalidArgument(f"file source needs a path, got {path!r}")
    roots = file_roots(settings)
    return FileSource(path, roots)


register("http", _http)
register("file", _file)


def source_from_spec(spec: Mapping[str, Any], settings: Settings) -> Source:
    """The Source a spec describes. InvalidArgument for an unknown type or bad fields."""
    if not isinstance(spec, Mapping):
        raise errdefs.InvalidArgument("source spec must be an object")
    kind = spec.get("type")
    factory = _FACTORIES.get(kind) if isinstance(kind, str) else None
    if factory is None:
        raise errdefs.InvalidArgument(f"unknown source type {kind!r}")
    return factory(spec, settings)


def spec_from_text(text: str, cwd: str | None = None) -> SourceSpec:
    """A spec for a URL (http/https) or a file path (made absolute against ``cwd``)."""
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
