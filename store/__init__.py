"""The content store: digests, values, protocols, the local filesystem store, locks,
filters and the OCI image layout index. Knows nothing of Celery, HTTP or gRPC."""

from store.digest import EMPTY, Digest
from store.helpers import Backoff, copy, list_content, open_writer, read_blob, write_blob
from store.local import LocalStore
from store.locks import ChainLocker, FileRefLocker, Lease, RefLocker
from store.ocilayout import ImageIndex
from store.protocols import Ingester, IngestManager, Manager, Provider, ReaderAt, Store, Writer
from store.values import Descriptor, Holder, Info, Status

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
