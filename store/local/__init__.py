"""The local filesystem implementation of the store protocols."""

from ingestq.store.local.store import LocalStore
from ingestq.store.local.writer import LocalWriter

__all__ = ["LocalStore", "LocalWriter"]
