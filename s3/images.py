"""Image records in the bucket: :class:`S3ImageIndex`, the OCI ``index.json`` of an S3
store at ``<prefix>/index.json``, changed only with conditional writes.

Every change reads the index with its ETag and writes it back with ``If-Match`` (or
``If-None-Match: *`` when there is none yet); a write that loses a race (412) reads
again and re-applies its change, so concurrent pulls on different hosts never lose an
image record. It is an :class:`ingestq.store.images.ImageIndex` (the same methods,
records and errors), only stored elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from ingestq import errdefs
from ingestq.s3.bucket import Bucket, ObjectInfo
from ingestq.s3.location import S3Location
from ingestq.store.images import INDEX_MEDIA_TYPE, ImageIndex
from ingestq.store.values import utcnow


class S3ImageIndex(ImageIndex):
    """The image index of an S3 store (see the module docstring). Raises what
    :class:`ImageIndex` raises, plus the S3 kinds (Unavailable, PermissionDenied, ...)."""

    def __init__(self, bucket: Bucket, location: S3Location) -> None:
        # No local layout: the index lives in the bucket.
        self._bucket = bucket
        self._key = location.key("index.json")
        self._modified: datetime | None = None

    @property
    def path(self) -> PurePosixPath:  # type: ignore[override]
        """The index's key (for messages)."""
        return PurePosixPath(self._key)

    def _parse(self, found: tuple[bytes, ObjectInfo] | None) -> dict[str, Any]:
        if found is None:
            self._modified = None
            return {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}
        self._modified = found[1].modified
        try:
            data = json.loads(found[0])
        except ValueError as e:
            raise errdefs.DataLoss(f"read {self._key}: {e}") from e
        if not isinstance(data, dict) or not isinstance(data.get("manifests"), list):
            raise errdefs.DataLoss(f"{self._key} is not an OCI image index")
        return data

    def _load(self) -> dict[str, Any]:
        return self._parse(self._bucket.read(self._key))

    def modified_at(self) -> datetime:
        """When the index last changed, as of the last read (now if unknown)."""
        return self._modified or utcnow()

    def _change(self, fn: Callable[[list[Any]], list[Any]], name: str) -> None:
        def change(found: tuple[bytes, ObjectInfo] | None) -> bytes:
            data = self._parse(found)
            data["manifests"] = fn(data["manifests"])
            return json.dumps(data, indent=None).encode()

        self._bucket.change(self._key, change, f"update {self._key} for {name}")


__all__ = ["S3ImageIndex"]
