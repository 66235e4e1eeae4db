"""A source type for tests only, loaded into real workers with ``celery -I``:
``{"type": "raise", "kind": "<errdefs kind name or a builtin>", "message": "...",
"details": {...}}`` raises that error when opened."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ingestq import errdefs
from ingestq.fetch.options import FetchOptions
from ingestq.fetch.source import Opened, Source
from ingestq.fetch.specs import register


class RaisingSource:
    def __init__(self, spec: Mapping[str, Any]) -> None:
        self._spec = spec

    @property
    def name(self) -> str:
        return f"raise:{self._spec.get('kind')}"

    def open(self, offset: int = 0) -> Opened:
        kind = str(self._spec.get("kind"))
        message = str(self._spec.get("message", ""))
        if kind == "ValueError":
            raise ValueError(message)
        if kind == "SystemExitLike":
            raise KeyError(message)
        details = self._spec.get("details") or None
        raise errdefs.KINDS[kind](message, details)


def _factory(spec: Mapping[str, Any], options: FetchOptions) -> Source:
    return RaisingSource(spec)


register("raise", _factory)
