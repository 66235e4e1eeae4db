"""JSON codecs of the store's values: Info, Status and Holder, in one place.

Every JSON form of these values (job results, the CLI's ``--json``, lock files, Redis
hashes) goes through these functions. Decoding is total: malformed input raises
InvalidArgument (or, for holders read from a lock, yields None), never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ingestq import errdefs
from ingestq.store.digest import Digest
from ingestq.store.values import Holder, Info, Status


def info_to_json(info: Info) -> dict[str, Any]:
    """An Info as a JSON object."""
    return {
        "digest": str(info.digest),
        "size": info.size,
        "created_at": info.created_at.isoformat(),
        "updated_at": info.updated_at.isoformat(),
        "labels": dict(info.labels),
    }


def info_from_json(obj: Mapping[str, Any]) -> Info:
    """Parse :func:`info_to_json`'s output. InvalidArgument when malformed."""
    try:
        labels = obj.get("labels") or {}
        return Info(
            digest=Digest.parse(obj["digest"]),
            size=int(obj["size"]),
            created_at=datetime.fromisoformat(obj["created_at"]),
            updated_at=datetime.fromisoformat(obj["updated_at"]),
            labels={str(k): str(v) for k, v in labels.items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
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
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


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
    "holder_from_dict",
    "holder_to_dict",
    "info_from_json",
    "info_to_json",
    "status_to_json",
]
