"""The per-blob lock of an S3 store, taken through the store's ref locker (the Redis
lease on workers, so it excludes hosts): :func:`blob_lock` waits for it (bounded),
:func:`try_blob_lock` takes it at once or not at all.

Who holds it: a publish that writes labels (from the blob's PUT to its metadata's, so gc
never sees the blob without the labels that may make it a root), gc while it re-reads a
candidate's roots and deletes it, and a lease change adding ``content`` resources, which
passes through it once written (:mod:`ingestq.s3.leases`): a gc deleting that blob then
has finished before the change returns, and every later one reads the lease.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ingestq import errdefs
from ingestq.store.digest import Digest
from ingestq.store.locks import Lease, RefLocker, new_holder_id

#: How long :func:`blob_lock` waits for a held blob lock before Unavailable, seconds.
BLOB_LOCK_WAIT = 120.0


def blob_lock_ref(digest: Digest) -> str:
    """The locker ref of ``digest``'s blob lock (no ingest ref has this shape: refs of
    the ingest core are ``<kind>-<hex>``; a client choosing it only contends)."""
    return f"ingestq.blob/{digest}"


def try_blob_lock(locker: RefLocker, digest: Digest) -> Lease | None:
    """``digest``'s blob lock at once, or None while someone holds it (or the locker
    cannot be reached: Unavailable is the locker's one answer for both)."""
    try:
        return locker.try_lock(blob_lock_ref(digest), new_holder_id())
    except errdefs.Unavailable:
        return None


@contextmanager
def blob_lock(locker: RefLocker, digest: Digest, *, wait: float = BLOB_LOCK_WAIT) -> Iterator[None]:
    """Hold ``digest``'s blob lock, waiting up to ``wait`` seconds for its holder (a gc
    deleting one batch holds it for seconds). Unavailable naming the blob after that."""
    deadline = time.monotonic() + wait
    attempt = 0
    while True:
        try:
            lease = locker.try_lock(blob_lock_ref(digest), new_holder_id())
            break
        except errdefs.Unavailable as e:
            left = deadline - time.monotonic()
            if left <= 0:
                raise errdefs.Unavailable(
                    f"blob lock of {digest} still held after {wait:.0f}s: {e}",
                    {"digest": str(digest)},
                ) from e
            time.sleep(min(left, random.uniform(0.5, 1.0) * min(0.5, 0.01 * 2**attempt)))
            attempt += 1
    try:
        yield
    finally:
        lease.release()


__all__ = ["BLOB_LOCK_WAIT", "blob_lock", "blob_lock_ref", "try_blob_lock"]
