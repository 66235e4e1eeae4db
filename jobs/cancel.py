"""Cancelling a running job: the ingest hooks both backends give the ingest core.

A job is canceled through its record store's cancel flag (:class:`CancelFlags`): a
Redis hash field for queued jobs, a ``.cancel`` file beside the record in process, so
another process (``ingestq job cancel``) can cancel either. In process, an event wakes
the job at once as well. The flag is polled at most every ``poll`` seconds; once seen,
the answer stays True.

Imports the ingest core's hook type and this package's record interface.
"""

from __future__ import annotations

import threading
import time

from ingestq.ingest.hooks import Hooks
from ingestq.jobs.records import CancelFlags


class CancelHooks(Hooks):
    """Ingest hooks whose :meth:`cancelled` is the job's cancel flag (or ``event``).
    A caller that reads the flag by other means (a lease's acquire script) says so with
    :meth:`read_elsewhere`, so a job done in milliseconds reads it once."""

    def __init__(
        self,
        flags: CancelFlags,
        job_id: str,
        *,
        event: threading.Event | None = None,
        poll: float = 0.25,
    ) -> None:
        self.event = event if event is not None else threading.Event()
        self._flags = flags
        self._job_id = job_id
        self._poll = poll
        self._next = 0.0  # when the flag is read next (monotonic seconds)

    def cancelled(self) -> bool:
        """True once the job's event is set or its cancel flag was seen."""
        if self.event.is_set():
            return True
        now = time.monotonic()
        if self._job_id and now >= self._next:
            self._next = now + self._poll
            if self._flags.cancel_requested(self._job_id):
                self.event.set()
        return self.event.is_set()

    def read_elsewhere(self, at: float | None = None) -> None:
        """The caller read the flag (unset) by other means, such as a lease's acquire
        script, just now or at ``at`` (monotonic seconds): the next read waits a poll
        from then."""
        self._next = (time.monotonic() if at is None else at) + self._poll

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` (woken early by the event); True when the job was canceled.
        The shape :meth:`ingestq.jobs.retry.RetryPolicy.run` wants for ``wait``."""
        return self.event.wait(seconds) or self.cancelled()


__all__ = ["CancelHooks"]
