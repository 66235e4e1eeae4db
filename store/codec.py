"""JSON codecs of the store's values: Info, Status, Holder and a blob's metadata, in one
place.

Every JSON form of these values (job results, the CLI's ``--json``, blob metadata files,
lock files, Redis hashes) goes through these functions. Decoding is total: malformed
input raises InvalidArgument (or, for holders read from a lock, yields None), never a
traceback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ingestq import errdefs
from ingestq.store.digest import Digest
from ingestq.store.values import Holder, Info, Status

_DECODE_ERRORS = (KeyError, TypeError, ValueError, AttributeError)


@dataclass(frozen=True)
class BlobMeta:
    """What a committed blob's metadata file records: its times and labels."""

    created_at: datetime
    updated_at: datetime
    labels: Mapping[str, str] = field(default_factory=dict)


def meta_to_json(meta: BlobMeta) -> dict[str, Any]:
    """A blob's metadata as a JSON object (the Info fields a blob file cannot carry)."""
    return {
        "created_at": meta.created_at.isoformat(),
        "updated_at": meta.updated_at.isoformat(),
        "labels": dict(meta.labels),
    }


def _meta(obj: Mapping[str, Any]) -> BlobMeta:
    labels = obj.get("labels") or {}
    if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
        raise TypeError("labels are not an object of strings")
    return BlobMeta(
        created_at=_aware(datetime.fromisoformat(obj["created_at"])),
        updated_at=_aware(datetime.fromisoformat(obj["updated_at"])),
        labels={str(k): str(v) for k, v in labels.items()},
    )


def _aware(at: datetime) -> datetime:
    """``at``, read as UTC when it names no zone (a hand-edited file)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def meta_from_json(obj: Mapping[str, Any]) -> BlobMeta:
    """Parse :func:`meta_to_json`'s output. InvalidArgument when malformed."""
    try:
        return _meta(obj)
    except _DECODE_ERRORS as e:
        raise errdefs.InvalidArgument(f"malformed blob metadata: {e}") from e


def info_to_json(info: Info) -> dict[str, Any]:
    """An Info as a JSON object."""
    meta = BlobMeta(info.created_at, info.updated_at, info.labels)
    return {"digest": str(info.digest), "size": info.size, **meta_to_json(meta)}


def info_from_json(obj: Mapping[str, Any]) -> Info:
    """Parse :func:`info_to_json`'s output. InvalidArgument when malformed."""
    try:
        meta = _meta(obj)
        size = obj["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise TypeError(f"size {size!r} is not a natural number")
        return Info(
            digest=Digest.parse(obj["digest"]),
            size=size,
            created_at=meta.created_at,
            updated_at=meta.updated_at,
            labels=meta.labels,
        )
    except _DECODE_ERRORS as e:
        raise errdefs.InvalidArgument(f"malformed Info: {e}") from e


def holder_to_dict(h: Holder) -> dict[str, Any]:
    """A Holder as a JSON object."""
    return {
        "id": h.id,
        "host": h.host,
        "pid": h.pid,
        "acquired_at": h.acquired_at.isoformat(),
        "heartbeat_at": h.heartbeat_at.isoformat(),
        "fence": h.fence,
    }


def holder_from_dict(d: Mapping[str, Any]) -> Holder | None:
    """Parse :func:`holder_to_dict`'s output; None if it is malformed."""
    try:
        return Holder(
            id=str(d["id"]),
            host=str(d["host"]),
            pid=int(d["pid"]),
            acquired_at=datetime.fromisoformat(d["acquired_at"]),
            heartbeat_at=datetime.fromisoformat(d["heartbeat_at"]),
            fence=int(d.get("fence", 0)),
        )
    except _DECODE_ERRORS:
        return None


def holder_to_json(h: Holder) -> str:
    """A Holder as JSON text (what a lock file holds)."""
    return json.dumps(holder_to_dict(h))


def holder_from_json(text: str) -> Holder | None:
    """Parse :func:`holder_to_json`'s output; None if it is unreadable."""
    try:
        d = json.loads(text)
    except ValueError:
        return None
    return holder_from_dict(d) if isinstance(d, dict) else None


def status_to_json(st: Status) -> dict[str, Any]:
    """A Status as a JSON object (``holder`` is null when nobody holds the ref)."""
    return {
        "ref": st.ref,
        "offset": st.offset,
        "total": st.total,
        "started_at": st.started_at.isoformat(),
        "updated_at": st.updated_at.isoformat(),
        "expected": str(st.expected) if st.expected else None,
        "holder": holder_to_dict(st.holder) if st.holder is not None else None,
    }


__all__ = [
    "BlobMeta",
    "holder_from_dict",
    "holder_from_json",
    "holder_to_dict",
    "holder_to_json",
    "info_from_json",
    "info_to_json",
    "meta_from_json",
    "meta_to_json",
    "status_to_json",
]
