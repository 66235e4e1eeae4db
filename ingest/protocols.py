"""What the ingest core and image finalize need of a store, beyond the four store
protocols of :mod:`ingestq.store.protocols`. :class:`ingestq.store.local.LocalStore`
satisfies both."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ingestq.store.digest import Digest
from ingestq.store.locks import RefLocker
from ingestq.store.protocols import Store


class LocalContent(Store, Protocol):
    """A :class:`~ingestq.store.protocols.Store` kept under a filesystem root (resume
    hints and the image index live beside the blobs), that can tell cheaply whether a
    digest is committed."""

    @property
    def root(self) -> Path:
        """The store's root directory."""
        ...

    def exists(self, digest: Digest) -> bool:
        """Whether ``digest`` is committed."""
        ...


class IngestStore(LocalContent, Protocol):
    """What :func:`ingestq.ingest.attempt.ingest_once` writes into: a
    :class:`LocalContent` whose ref locks can name who holds a ref."""

    @property
    def locker(self) -> RefLocker:
        """The ref locks writers take (to name the holder of a busy ref)."""
        ...
