"""Test helpers of the ingest core: an in-memory source and a subscriber that records
every hook call."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from ingestq.fetch.source import Opened
from ingestq.ingest.hooks import Hooks
from ingestq.ingest.outcome import IngestResult, RefBusy
from ingestq.ingest.request import IngestRequest

MiB = 1 << 20


class BytesSource:
    """``data`` as a source that resumes at any offset (``resumable``) or always starts
    at 0; records every offset it was opened at."""

    def __init__(self, data: bytes, *, resumable: bool = True, announce: int | None = -1) -> None:
        self.data = data
        self.resumable = resumable
        self.announce = len(data) if announce == -1 else announce
        self.opened: list[int] = []

    @property
    def name(self) -> str:
        return "memory:test"

    def open(self, offset: int = 0) -> Opened:
        self.opened.append(offset)
        start = offset if self.resumable else 0
        return Opened(io.BytesIO(self.data[start:]), start, self.announce)


class Recorder(Hooks):
    """Records every event as ``(name, *args)``; ``cancel_at`` cancels once an offset is
    reached, ``lost`` answers :meth:`lock_lost`, ``on_progress`` runs on every progress."""

    def __init__(
        self,
        *,
        cancel_at: int | None = None,
        lost: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.events: list[tuple[Any, ...]] = []
        self._cancel_at = cancel_at
        self._lost = lost
        self._offset = 0
        self._on_progress = on_progress

    def names(self) -> list[str]:
        return [e[0] for e in self.events]

    def started(self, request: IngestRequest, source: str) -> None:
        self.events.append(("started", request.ref, source))

    def resumed(self, offset: int) -> None:
        self.events.append(("resumed", offset))

    def progress(self, offset: int, total: int) -> None:
        self._offset = offset
        self.events.append(("progress", offset, total))
        if self._on_progress is not None:
            self._on_progress(offset, total)

    def lock_wait(self, busy: RefBusy, delay: float) -> None:
        self.events.append(("lock_wait", busy, delay))

    def done(self, result: IngestResult) -> None:
        self.events.append(("done", result))

    def failed(self, error: Exception) -> None:
        self.events.append(("failed", error))

    def cancelled(self) -> bool:
        return self._cancel_at is not None and self._offset >= self._cancel_at

    def lock_lost(self) -> bool:
        return self._lost
