"""Conversions between the store's values and the containerd API messages."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from ingestq import errdefs
from ingestq.api.proto.containerd.services.content.v1 import content_pb2
from ingestq.api.proto.containerd.types import descriptor_pb2
from ingestq.store.digest import Digest
from ingestq.store.values import Descriptor, Info, Status

#: Go's zero time (0001-01-01T00:00:00Z), what containerd sends for an unset time.
GO_ZERO_SECONDS = -62135596800


def timestamp(dt: datetime | None) -> Timestamp:
    """A Timestamp for ``dt`` (naive values are taken as UTC); None gives Go's zero
    time, so a timestamp field is never left unset."""
    ts = Timestamp()
    if dt is None:
        ts.seconds = GO_ZERO_SECONDS
        return ts
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ts.FromDatetime(dt)
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    """An aware UTC datetime for ``ts`` (microsecond precision). InvalidArgument for a
    timestamp out of protobuf's range (seconds past year 9999, nanos past a second)."""
    if ts.seconds <= GO_ZERO_SECONDS:
        return datetime.min.replace(tzinfo=UTC)
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as e:
        raise errdefs.InvalidArgument(
            f"timestamp {{seconds: {ts.seconds}, nanos: {ts.nanos}}} is not valid: {e}"
        ) from None


def info_to_pb(info: Info) -> content_pb2.Info:
    """The content ``Info`` message for a store Info (all fields, both timestamps)."""
    return content_pb2.Info(
        digest=str(info.digest),
        size=info.size,
        created_at=timestamp(info.created_at),
        updated_at=timestamp(info.updated_at),
        labels=dict(info.labels),
    )


def info_from_pb(msg: content_pb2.Info) -> Info:
    """A store Info from the message. InvalidArgument for a malformed digest."""
    return Info(
        digest=Digest.parse(msg.digest),
        size=msg.size,
        created_at=from_timestamp(msg.created_at),
        updated_at=from_timestamp(msg.updated_at),
        labels=dict(msg.labels),
    )


def status_to_pb(status: Status, ref: str | None = None) -> content_pb2.Status:
    """The content ``Status`` message (the client's ``ref`` when given)."""
    return content_pb2.Status(
        ref=status.ref if ref is None else ref,
        offset=status.offset,
        total=status.total,
        expected=str(status.expected) if status.expected else "",
        started_at=timestamp(status.started_at),
        updated_at=timestamp(status.updated_at),
    )


def status_from_pb(msg: content_pb2.Status) -> Status:
    """A store Status from the message (no holder: the API does not carry it)."""
    return Status(
        ref=msg.ref,
        offset=msg.offset,
        total=msg.total,
        started_at=from_timestamp(msg.started_at),
        updated_at=from_timestamp(msg.updated_at),
        expected=Digest.parse(msg.expected) if msg.expected else None,
    )


def descriptor_to_pb(desc: Descriptor) -> descriptor_pb2.Descriptor:
    """The ``containerd.types.Descriptor`` message."""
    return descriptor_pb2.Descriptor(
        media_type=desc.media_type,
        digest=str(desc.digest),
        size=desc.size,
        annotations=dict(desc.annotations),
    )
