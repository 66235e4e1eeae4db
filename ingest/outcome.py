"""How an ingest attempt ends: :class:`IngestResult` (the blob is committed) or
:class:`RefBusy` (another writer holds the ref; the caller decides how to wait)."""

from __future__ import annotations

from dataclasses import dataclass

from ingestq import errdefs
from ingestq.store.values import Holder, Info


@dataclass(frozen=True)
class IngestResult:
    """The committed blob, whether this attempt fetched bytes, how many, and from where."""

    info: Info
    fetched: bool
    bytes_fetched: int = 0
    resumed_from: int = 0


class RefBusy(Exception):
    """Another writer holds the ref. ``error`` is the store's Unavailable ("ref ...
    locked for ..."), ``holder`` who holds it (with its heartbeat), when known."""

    def __init__(self, error: errdefs.Unavailable, holder: Holder | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.holder = holder
