"""The JSON records the S3 store keeps beside its blobs: an ingest's record
(:class:`IngestRecord`) and a blob's metadata (times, labels and size)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ingestq import errdefs
from ingestq.store.codec import BlobMeta, meta_from_json, meta_to_json
from ingestq.store.digest import Digest
from ingestq.store.values import Holder, Status

_DECODE_ERRORS = (KeyError, TypeError, ValueError, AttributeError)


@dataclass(frozen=True)
class Part:
    """One uploaded part of a multipart upload: its number, size and the server's ETag."""

    number: int
    size: int
    etag: str


@dataclass(frozen=True)
class Upload:
    """An ingest's multipart upload: its id, the key it completes to, the parts this
    ingest vouches for, and the hash state after the last of them (hex)."""

    id: str
    key: str
    parts: tuple[Part, ...] = ()
    state: str = ""

    @property
    def size(self) -> int:
        """The bytes of the parts."""
        return sum(p.size for p in self.parts)


@dataclass(frozen=True)
class IngestRecord:
    """What an ingest keeps in ``ingests/<sha256(ref)>.json``.

    ``offset`` is what the last writer reported (parts + its buffer, refreshed while it
    writes); ``persisted`` is what survives a crash (the parts + the stored tail).
    """

    ref: str
    algorithm: str
    started_at: datetime
    updated_at: datetime
    total: int = 0
    expected: Digest | None = None
    offset: int = 0
    upload: Upload | None = None
    tail: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def persisted(self) -> int:
        """The bytes a new writer recovers: the upload's parts and the stored tail."""
        return (self.upload.size if self.upload is not None else 0) + self.tail

    def status(self, holder: Holder | None) -> Status:
        """The Status readers see: the live offset while someone holds the ref, what
        survives otherwise."""
        offset = self.offset if holder is not None else self.persisted
        return Status(
            self.ref, offset, self.total, self.started_at, self.updated_at, self.expected, holder
        )

    def with_(self, **changes: Any) -> IngestRecord:
        """A copy with ``changes``."""
        return replace(self, **changes)


def record_to_bytes(rec: IngestRecord) -> bytes:
    """The JSON of an ingest record."""
    upload = None
    if rec.upload is not None:
        upload = {
            "id": rec.upload.id,
            "key": rec.upload.key,
            "parts": [[p.number, p.size, p.etag] for p in rec.upload.parts],
            "state": rec.upload.state,
        }
    obj = {
        "ref": rec.ref,
        "algorithm": rec.algorithm,
        "started_at": rec.started_at.isoformat(),
        "updated_at": rec.updated_at.isoformat(),
        "total": rec.total,
        "expected": str(rec.expected) if rec.expected else None,
        "offset": rec.offset,
        "upload": upload,
        "tail": rec.tail,
    }
    return json.dumps(obj).encode()


def record_from_bytes(data: bytes) -> IngestRecord:
    """Parse :func:`record_to_bytes`'s output. DataLoss when it is malformed."""
    try:
        obj = json.loads(data)
        up = obj.get("upload")
        upload = None
        if up is not None:
            upload = Upload(
                id=str(up["id"]),
                key=str(up["key"]),
                parts=tuple(Part(int(n), int(s), str(e)) for n, s, e in up["parts"]),
                state=str(up["state"]),
            )
        return IngestRecord(
            ref=str(obj["ref"]),
            algorithm=str(obj["algorithm"]),
            started_at=datetime.fromisoformat(obj["started_at"]),
            updated_at=datetime.fromisoformat(obj["updated_at"]),
            total=int(obj["total"]),
            expected=Digest.parse(obj["expected"]) if obj.get("expected") else None,
            offset=int(obj["offset"]),
            upload=upload,
            tail=int(obj["tail"]),
        )
    except (*_DECODE_ERRORS, errdefs.InvalidArgument) as e:
        raise errdefs.DataLoss(f"malformed ingest record: {e}") from e


def meta_to_bytes(meta: BlobMeta, size: int) -> bytes:
    """A blob's metadata object: :func:`ingestq.store.codec.meta_to_json` plus its size."""
    return json.dumps({**meta_to_json(meta), "size": size}).encode()


def meta_from_bytes(data: bytes) -> tuple[BlobMeta, int]:
    """Parse :func:`meta_to_bytes`'s output. DataLoss when it is malformed."""
    try:
        obj = json.loads(data)
        return meta_from_json(obj), int(obj["size"])
    except (*_DECODE_ERRORS, errdefs.InvalidArgument) as e:
        raise errdefs.DataLoss(f"malformed blob metadata: {e}") from e


__all__ = [
    "IngestRecord",
    "Part",
    "Upload",
    "meta_from_bytes",
    "meta_to_bytes",
    "record_from_bytes",
    "record_to_bytes",
]
