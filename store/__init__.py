"""The content store: digests, values, protocols, the local filesystem store, locks,
filters, the store root's layout, image records, lease records and resume hints, and the
contract suite every implementation owes (:mod:`ingestq.store.testing`). Knows nothing of
Celery, HTTP or gRPC.

:class:`LocalStore` (the filesystem implementation, :mod:`ingestq.store.local`) loads on
first use, so the store package itself never imports its implementations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ingestq.store.digest import EMPTY, Digest
from ingestq.store.helpers import Backoff, copy, list_content, open_writer, read_blob, write_blob
from ingestq.store.images import ImageIndex
from ingestq.store.locks import ChainLocker, FileRefLocker, Lease, RefLocker
from ingestq.store.protocols import (
    Ingester,
    IngestManager,
    Manager,
    Provider,
    Putter,
    ReaderAt,
    Store,
    Writer,
)
from ingestq.store.values import Descriptor, Holder, Info, Status

if TYPE_CHECKING:
    from ingestq.store.local import LocalStore


def __getattr__(name: str) -> Any:
    """Load :class:`LocalStore` on first use (PEP 562)."""
    if name == "LocalStore":
        from ingestq.store.local import LocalStore

        return LocalStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EMPTY",
    "Backoff",
    "ChainLocker",
    "Descriptor",
    "Digest",
    "FileRefLocker",
    "Holder",
    "ImageIndex",
    "Info",
    "IngestManager",
    "Ingester",
    "Lease",
    "LocalStore",
    "Manager",
    "Provider",
    "Putter",
    "ReaderAt",
    "RefLocker",
    "Status",
    "Store",
    "Writer",
    "copy",
    "list_content",
    "open_writer",
    "read_blob",
    "write_blob",
]
