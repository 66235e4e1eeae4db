"""The in-process ingest: :func:`ingest` runs attempts (:func:`ingest_once`) and waits
with capped exponential backoff and jitter while the ref is locked. What the embedded
default and any synchronous caller use; the Celery task retries instead of waiting."""

from __future__ import annotations

import time
from collections.abc import Callable

from ingestq import errdefs
from ingestq.fetch.source import Source
from ingestq.ingest.attempt import ingest_once
from ingestq.ingest.hooks import NO_HOOKS, IngestHooks
from ingestq.ingest.outcome import IngestResult, RefBusy
from ingestq.ingest.protocols import IngestStore
from ingestq.ingest.request import IngestRequest
from ingestq.store.helpers import Backoff


def ingest(
    store: IngestStore,
    source: Source,
    request: IngestRequest,
    *,
    hooks: IngestHooks = NO_HOOKS,
    timeout: float | None = None,
    backoff: Backoff | None = None,
    on_wait: Callable[[RefBusy, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> IngestResult:
    """Ingest ``request`` in this process, waiting while the ref is locked.

    Waits with capped exponential backoff and full jitter (50 ms doubling to 2 s) until
    the ref is free or the expected digest exists (then returns without fetching).
    Every wait is reported to ``hooks.lock_wait`` and then ``on_wait(busy, delay)``;
    after ``timeout`` seconds the lock's Unavailable is raised; Canceled when
    ``hooks.cancelled()`` before an attempt. Other errors as :func:`ingest_once`. The
    call ends with exactly one ``hooks.done`` or ``hooks.failed``.
    """
    backoff = backoff or Backoff(first=0.05, cap=2.0)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if hooks.cancelled():
            canceled = errdefs.Canceled(f"ingest {request.ref} canceled while waiting")
            hooks.failed(canceled)
            raise canceled
        try:
            return ingest_once(store, source, request, hooks=hooks)
        except RefBusy as busy:
            delay = backoff.next_delay()
            if deadline is not None and time.monotonic() + delay > deadline:
                hooks.failed(busy.error)
                raise busy.error from busy
            hooks.lock_wait(busy, delay)
            if on_wait is not None:
                on_wait(busy, delay)
            sleep(delay)
