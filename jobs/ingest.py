"""What an ingest job is in both backends beyond the job interface: the request a
producer's arguments make.

Imports fetch (source specs) and ingest (the request).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from ingestq.fetch.specs import source_name, spec_from_text
from ingestq.ingest.request import IngestRequest, make_request
from ingestq.store.expiry import requested_labels


def ingest_request(
    source: str | Mapping[str, Any],
    *,
    digest: str | None = None,
    size: int = 0,
    media_type: str = "application/octet-stream",
    ref: str | None = None,
    labels: Mapping[str, str] | None = None,
    expire: timedelta | str | None = None,
) -> IngestRequest:
    """The request to ingest ``source`` (a URL, a file path, or a source spec object).

    ``digest``/``size`` are the expected content (optional: without a digest the bytes
    are hashed while fetching and committed under the digest they have); ``ref``
    defaults to containerd's ref key (see :mod:`ingestq.fetch.refkey`).

    The blob is committed as one a producer asked for (:data:`ingestq.store.gc.REQUESTED_LABEL`):
    gc keeps it, or with ``expire`` (a timedelta or ``30s``, ``10m``, ``7d``) keeps it
    until that long from now, after which it goes unless something else references it.

    Raises InvalidArgument for a malformed source, duration or for any field the store
    would refuse (digest, size, media type, ref, labels: :mod:`ingestq.store.rules`),
    before anything is published or fetched.
    """
    labels = {**(labels or {}), **requested_labels(expire)}
    spec = spec_from_text(source) if isinstance(source, str) else dict(source)
    return make_request(
        spec, source_name(spec), digest=digest, size=size, media_type=media_type, ref=ref,
        labels=labels,
    )  # fmt: skip


__all__ = ["ingest_request"]
