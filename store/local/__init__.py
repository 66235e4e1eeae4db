"""The local filesystem implementation of the store protocols."""

from store.local.store import LocalStore, validate_ref
from store.local.writer import LocalWriter

__all__ = ["LocalStore", "LocalWriter", "validate_ref"]
