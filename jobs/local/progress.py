"""The progress an in-process ingest job records: offset, the total the source announced
and the transfer rate, written to the job's record at most every :data:`INTERVAL`
seconds so that other processes of the host (``ingestq job status``, ``ingestq
active``) see what the job's own process sees.

Record fields: ``offset``, ``total`` (0: unknown), ``rate`` (bytes/s, smoothed) and
``progress_at`` (Unix seconds).

Imports the ingest core's hook type and this package's context.
"""

from __future__ import annotations

import time

from ingestq import errdefs
from ingestq.ingest.hooks import Hooks
from ingestq.jobs.local.context import LocalContext

#: Seconds between two progress writes to a job's record.
INTERVAL = 0.5
#: The weight of the newest interval in the smoothed rate.
SMOOTHING = 0.5


class RecordProgress(Hooks):
    """Ingest hooks recording job ``job_id``'s progress in its record (best effort:
    a record that cannot be written is skipped, the ingest goes on)."""

    def __init__(self, ctx: LocalContext, job_id: str) -> None:
        self._ctx = ctx
        self._job_id = job_id
        self._last: tuple[float, int] | None = None
        self._rate = 0.0

    def resumed(self, offset: int) -> None:
        """A resumed write starts counting its rate at ``offset``."""
        self._last = (time.monotonic(), offset)

    def progress(self, offset: int, total: int) -> None:
        """Record ``offset``/``total`` and the rate, at most every :data:`INTERVAL`."""
        now = time.monotonic()
        if self._last is None:
            self._last = (now, offset)
            self._write(offset, total)
            return
        then, before = self._last
        if now - then < INTERVAL:
            return
        current = max(offset - before, 0) / (now - then)
        self._rate = (
            current if self._rate == 0.0 else (SMOOTHING * current + (1 - SMOOTHING) * self._rate)
        )
        self._last = (now, offset)
        self._write(offset, total)

    def _write(self, offset: int, total: int) -> None:
        try:
            self._ctx.update(
                self._job_id,
                offset=str(offset),
                total=str(total),
                rate=f"{self._rate:.1f}",
                progress_at=f"{time.time():.3f}",
            )
        except errdefs.ErrdefsError:
            return


__all__ = ["INTERVAL", "RecordProgress"]
