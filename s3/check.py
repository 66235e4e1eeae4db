"""``ingestq images check`` on an S3 store: :func:`check_image`, the walk of
:func:`ingestq.store.gc.check_tree` over the bucket (one HEAD per blob for its size,
ranged GETs for manifests and, with ``verify``, for re-hashing every blob)."""

from __future__ import annotations

from ingestq import errdefs
from ingestq.s3.store import S3Store
from ingestq.store.digest import Digest
from ingestq.store.gc import ImageCheck, check_tree


class _BucketBlobs:
    """A :class:`ingestq.store.gc.CheckedStore` over an S3 store's blob objects."""

    def __init__(self, store: S3Store) -> None:
        self.store = store

    def size_of(self, digest: Digest) -> int | None:
        head = self.store.bucket.head(self.store.location.blob(digest))
        return head.size if head is not None else None

    def read_at(self, digest: Digest, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        key = self.store.location.blob(digest)
        try:
            data, _ = self.store.bucket.get(key, (offset, offset + length - 1))
        except errdefs.NotFound:
            raise errdefs.NotFound(f"content {digest}") from None
        return data


def check_image(store: S3Store, name: str, *, verify: bool = False) -> ImageCheck:
    """Walk image ``name``'s tree in the bucket: every blob it reaches must be committed
    with its descriptor's size; with ``verify`` each is also read back and hashed. The
    image record comes from the bucket's ``index.json``. NotFound ``image <name>`` if
    it is not recorded; the kinds of :func:`ingestq.s3.errors.from_s3_error` when S3
    fails."""
    desc = store.image_index().get(name)
    return check_tree(_BucketBlobs(store), name, desc.digest, desc.size, desc.media_type,
                      verify=verify)  # fmt: skip


__all__ = ["check_image"]
