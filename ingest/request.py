"""What to ingest: :class:`IngestRequest` (the job argument, JSON both ways) and
:func:`make_request` (a request with the default ref).

A request is valid once built: every field is checked with the store's rules
(:mod:`ingestq.store.rules`) when it is made, in the producer, and again when a worker
decodes it, so a bad field fails with InvalidArgument before anything is fetched."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ingestq import errdefs
from ingestq.fetch.refkey import make_ref_key, source_ref
from ingestq.store.digest import Digest
from ingestq.store.rules import validate_labels, validate_media_type, validate_ref, validate_size
from ingestq.store.values import Descriptor


@dataclass(frozen=True)
class IngestRequest:
    """What to ingest: a source spec, the expected digest/size (optional), the ref and
    labels. JSON-serialisable through :meth:`to_json` / :meth:`from_json`.

    Raises InvalidArgument when built with a field the store would refuse: a source that
    is not an object, a bad ref, a digest that is not a :class:`Digest`, a size outside
    [0, 2**63 - 1], a media type that is not ``type/subtype``, or labels breaking
    containerd's rules (see :mod:`ingestq.store.rules`)."""

    source: Mapping[str, Any]
    ref: str
    digest: Digest | None = None
    size: int = 0
    media_type: str = "application/octet-stream"
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.source, Mapping):
            raise errdefs.InvalidArgument("ingest request needs a source object")
        validate_ref(self.ref)
        if self.digest is not None and not isinstance(self.digest, Digest):
            raise errdefs.InvalidArgument(f"digest {self.digest!r} is not a Digest")
        validate_size(self.size)
        validate_media_type(self.media_type)
        validate_labels(self.labels)

    @property
    def expected(self) -> Descriptor | None:
        """The expected descriptor, when the digest is known."""
        if self.digest is None:
            return None
        return Descriptor(self.digest, self.size, self.media_type)

    def to_json(self) -> dict[str, Any]:
        """The JSON object a job message carries."""
        return {
            "source": dict(self.source),
            "ref": self.ref,
            "digest": str(self.digest) if self.digest is not None else None,
            "size": self.size,
            "media_type": self.media_type,
            "labels": dict(self.labels),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> IngestRequest:
        """Parse :meth:`to_json`'s output (what a worker receives: untrusted, every
        field is type-checked, nothing is coerced). InvalidArgument on a malformed field."""
        if not isinstance(obj, Mapping):
            raise errdefs.InvalidArgument("ingest request must be an object")
        source, ref, digest = obj.get("source"), obj.get("ref"), obj.get("digest")
        labels = obj.get("labels") or {}
        if not isinstance(source, Mapping):
            raise errdefs.InvalidArgument("ingest request needs a source object")
        if not isinstance(ref, str) or not ref:
            raise errdefs.InvalidArgument("ingest request needs a ref")
        if not isinstance(labels, Mapping):
            raise errdefs.InvalidArgument("labels must be an object")
        return cls(
            source=dict(source),
            ref=ref,
            digest=Digest.parse(digest) if digest is not None else None,
            size=obj.get("size", 0),
            media_type=obj.get("media_type") or "application/octet-stream",
            labels=dict(labels),
        )


def make_request(
    source: Mapping[str, Any],
    source_name: str,
    *,
    digest: str | Digest | None = None,
    size: int = 0,
    media_type: str = "application/octet-stream",
    annotations: Mapping[str, str] | None = None,
    ref: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> IngestRequest:
    """An IngestRequest with the default ref (see :mod:`ingestq.fetch.refkey`) when none is given.
    InvalidArgument for any field the store would refuse (see :class:`IngestRequest`),
    checked here, before anything is published or fetched."""
    d = Digest.parse(digest) if digest is not None else None
    validate_size(size)
    validate_media_type(media_type)
    labels = {} if labels is None else labels
    validate_labels(labels)
    if ref is None:
        ref = make_ref_key(d, media_type, annotations) if d is not None else source_ref(source_name)
    return IngestRequest(dict(source), ref, d, size, media_type, dict(labels))
