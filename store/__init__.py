"""The content store: digests, values, protocols, the local filesystem store, locks,
filters, the store root's layout, image records, lease records and resume hints, and the
contract suite every implementation owes (:mod:`ingestq.store.testing`). Knows nothing of
Celery, HTTP or gRPC.

:class:`LocalStore` (the filesystem implementation, :mod:`ingestq.store.local`), the
helpers, image records and locks load on first use, so the store package itself never
imports its implementations.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ingestq.store.digest import EMPTY, Digest
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
    from ingestq.store.helpers import (
        Backoff,
        copy,
        list_content,
        open_writer,
        read_blob,
        write_blob,
    )
    from ingestq.store.images import ImageIndex
    from ingestq.store.local import LocalStore
    from ingestq.store.locks import ChainLocker, FileRefLocker, Lease, RefLocker

#: Names that load their module on first use (PEP 562): a process that only needs
#: digests and values (a producer queueing jobs) loads none of them.
_LAZY = {
    **dict.fromkeys(
        ("Backoff", "copy", "list_content", "open_writer", "read_blob", "write_blob"),
        "ingestq.store.helpers",
    ),
    "ImageIndex": "ingestq.store.images",
    **dict.fromkeys(("ChainLocker", "FileRefLocker", "Lease", "RefLocker"), "ingestq.store.locks"),
    "LocalStore": "ingestq.store.local",
}


def __getattr__(name: str) -> Any:
    """Load a name of :data:`_LAZY` from its module on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    """The module's names, the lazy ones included."""
    return sorted({*globals(), *_LAZY})


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
