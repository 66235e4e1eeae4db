"""What to ingest: :class:`IngestRequest` (the job argument, JSON both ways) and
:func:`make_request` (a request with the default ref)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ingestq import errdefs
from ingestq.fetch.refkey import make_ref_key, source_ref
from ingestq.store.digest import Digest
from ingestq.store.values import Descriptor

#: The largest size a blob can have in the store (a file offset is a signed 64-bit int).
MAX_SIZE = (1 << 63) - 1


def check_size(size: object) -> int:
    """``size`` if it is an int from 0 to :data:`MAX_SIZE`, else InvalidArgument."""
    if not isinstance(size, int) or isinstance(size, bool):
        raise errdefs.InvalidArgument(f"size {size!r} is not a natural number")
    if size < 0:
        raise errdefs.InvalidArgument(f"size {size} is negative")
    if size > MAX_SIZE:
        raise errdefs.InvalidArgument(f"size {size} is larger than the store can hold")
    return size


@dataclass(frozen=True)
class IngestRequest:
    """What to ingest: a source spec, the expected digest/size (optional), the ref and
    labels. JSON-serialisable through :meth:`to_json` / :meth:`from_json`. A size that
    is negative or beyond :data:`MAX_SIZE` is InvalidArgument when the request is made."""

    source: Mapping[str, Any]
    ref: str
    digest: Digest | None = None
    size: int = 0
    media_type: str = "application/octet-stream"
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_size(self.size)

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
        """Parse :meth:`to_json`'s output. InvalidArgument on a malformed field."""
        if not isinstance(obj, Mapping):
            raise errdefs.InvalidArgument("ingest request must be an object")
        source, ref, digest = obj.get("source"), obj.get("ref"), obj.get("digest")
        size, labels = obj.get("size", 0), obj.get("labels") or {}
        if not isinstance(source, Mapping):
            raise errdefs.InvalidArgument("ingest request needs a source object")
        if not isinstance(ref, str) or not ref:
            raise errdefs.InvalidArgument("ingest request needs a ref")
        check_size(size)
        if not isinstance(labels, Mapping):
            raise errdefs.InvalidArgument("labels must be an object")
        return cls(
            source=dict(source),
            ref=ref,
            digest=Digest.parse(digest) if digest is not None else None,
            size=size,
            media_type=str(obj.get("media_type") or "application/octet-stream"),
            labels={str(k): str(v) for k, v in labels.items()},
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
    InvalidArgument for a malformed digest, a negative size or one beyond :data:`MAX_SIZE`."""
    d = Digest.parse(digest) if digest is not None else None
    check_size(size)
    if ref is None:
        ref = make_ref_key(d, media_type, annotations) if d is not None else source_ref(source_name)
    return IngestRequest(dict(source), ref, d, size, media_type, dict(labels or {}))
