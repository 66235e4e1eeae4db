"""Fetched records: which blob a source's bytes became, and the validators that prove
the source still holds them, so a later ingest of the same source asks the server
conditionally and takes the committed blob on "not modified" (huggingface_hub's
etag-to-blob cache, shared through the store root by every process and host).

Files: ``fetched/<sha256(key)>.json`` under the store root (see :mod:`store.layout`),
keyed by the source's ref (``source-<sha256(URL)>``), holding
``{"source": name, "digest": d, "size": n, "etag": e, "last_modified": m}`` (at least
one validator). They are advisory: a missing, unreadable or malformed record, one of
another source, or one whose blob is gone only means the source is fetched in full.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ingestq import errdefs
from ingestq.store.atomic import write_json
from ingestq.store.digest import Digest
from ingestq.store.layout import RootLayout
from ingestq.store.ownfiles import read_own

#: The largest record read (one is a few hundred bytes).
MAX_RECORD = 64 << 10


@dataclass(frozen=True)
class Fetched:
    """The blob ``digest`` (``size`` bytes) fetched from ``source`` when it answered
    with ``etag`` (a strong ETag) and/or ``last_modified`` (its Last-Modified)."""

    source: str
    digest: Digest
    size: int
    etag: str | None = None
    last_modified: str | None = None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class FetchedRecords:
    """Fetched records per key under the root's ``fetched/``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._layout = RootLayout(Path(root))

    def get(self, key: str, source: str) -> Fetched | None:
        """The record under ``key`` for ``source``, or None (none, another source's,
        unreadable, malformed, or without a validator)."""
        try:
            d = json.loads(read_own(self._layout.fetched_record(key), MAX_RECORD))
        except (OSError, ValueError):
            return None
        if not isinstance(d, dict) or d.get("source") != source:
            return None
        size, digest = d.get("size"), d.get("digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return None
        if not isinstance(digest, str):
            return None
        try:
            parsed = Digest.parse(digest)
        except errdefs.ErrdefsError:
            return None
        etag, modified = _text(d.get("etag")), _text(d.get("last_modified"))
        if etag is None and modified is None:
            return None
        return Fetched(source, parsed, size, etag, modified)

    def put(self, key: str, record: Fetched) -> None:
        """Record ``record`` under ``key`` (atomically; a record without a validator
        forgets the key's record). Best effort."""
        if record.etag is None and record.last_modified is None:
            self.drop(key)
            return
        obj: dict[str, object] = {
            "source": record.source,
            "digest": str(record.digest),
            "size": record.size,
        }
        if record.etag is not None:
            obj["etag"] = record.etag
        if record.last_modified is not None:
            obj["last_modified"] = record.last_modified
        with contextlib.suppress(OSError):
            self._layout.fetched.mkdir(parents=True, exist_ok=True)
            # Not fsynced: a record lost in a crash only costs one full fetch.
            write_json(self._layout.fetched_record(key), obj, sync=False)

    def drop(self, key: str) -> None:
        """Forget ``key``'s record."""
        with contextlib.suppress(OSError):
            self._layout.fetched_record(key).unlink()


__all__ = ["Fetched", "FetchedRecords"]
