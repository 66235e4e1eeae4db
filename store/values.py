"""Immutable values the store hands out: Descriptor, Info (a committed blob) and Status (a write).

Info and Status are never mixed: Info describes content that exists, Status an ingest that is
still being written. Timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

from ingestq.store.digest import Digest


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def _frozen(labels: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(labels or {}))


@dataclass(frozen=True)
class Descriptor:
    """What a caller expects: media type, digest, size (0 = unknown) and annotations."""

    digest: Digest
    size: int = 0
    media_type: str = "application/octet-stream"
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False, compare=True)
    urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "annotations", _frozen(self.annotations))

    def to_oci(self) -> dict[str, object]:
        """The OCI JSON form (``mediaType``, ``digest``, ``size``, ``annotations``)."""
        out: dict[str, object] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.urls:
            out["urls"] = list(self.urls)
        return out

    @classmethod
    def from_oci(cls, obj: Mapping[str, object]) -> Descriptor:
        """Parse an OCI descriptor object. Raises InvalidArgument on a bad digest or size."""
        from ingestq import errdefs

        size = obj.get("size", 0)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise errdefs.InvalidArgument(f"descriptor size {size!r} is not a natural number")
        annotations = obj.get("annotations") or {}
        if not isinstance(annotations, Mapping):
            raise errdefs.InvalidArgument("descriptor annotations must be an object")
        urls = obj.get("urls") or ()
        return cls(
            digest=Digest.parse(str(obj.get("digest", ""))),
            size=size,
            media_type=str(obj.get("mediaType", "application/octet-stream")),
            annotations={str(k): str(v) for k, v in annotations.items()},
            urls=tuple(str(u) for u in urls) if isinstance(urls, list | tuple) else (),
        )


@dataclass(frozen=True)
class Info:
    """A committed blob: digest, size, creation and update times, labels."""

    digest: Digest
    size: int
    created_at: datetime
    updated_at: datetime
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))


@dataclass(frozen=True)
class Holder:
    """Who holds an ingest's write lock, and when it last showed it was alive."""

    id: str
    host: str
    pid: int
    acquired_at: datetime
    heartbeat_at: datetime
    fence: int = 0


@dataclass(frozen=True)
class Status:
    """A write in progress (or left for resume): ref, offset, total (0 = unknown), expected."""

    ref: str
    offset: int
    total: int
    started_at: datetime
    updated_at: datetime
    expected: Digest | None = None
    holder: Holder | None = None
