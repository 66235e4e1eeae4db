"""The content store: digests, values, protocols, the local filesystem store, locks,
filters and the OCI image layout index. Knows nothing of Celery, HTTP or gRPC."""

from ingestq.store.digest import EMPTY, Digest
from ingestq.store.helpers import Backoff, copy, list_content, open_writer, read_blob, write_blob
from ingestq.store.images import ImageIndex
from ingestq.store.local import LocalStore
from ingestq.store.locks import ChainLocker, FileRefLocker, Lease, RefLocker
from ingestq.store.protocols import (
    Ingester,
    IngestManager,
    Manager,
    Provider,
    ReaderAt,
    Store,
    Writer,
)
from ingestq.store.values import Descriptor, Holder, Info, Status

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
