"""The ingest lifecycle hooks: what an ingest tells its subscribers, and how several
subscribers are combined into one.

An ingest reports to one :class:`IngestHooks`. Subscribers live with what they feed:
prometheus metrics (:class:`ingestq.tasks.metrics.MetricsHooks`), status published
through a Redis lease (:class:`ingestq.tasks.ingest_hooks.LeaseStatusHooks`), job
cancellation (the jobs layer's hooks). :func:`combine` makes one of several.

Order of the calls of one attempt (:func:`ingest_once`)::

    started → [resumed] → progress (copy start) → progress (per chunk)... → done | failed

``started`` comes only when the attempt takes the ref's writer (an expected digest
already committed goes straight to ``done``); an attempt that finds the ref locked
raises RefBusy with no event, and :func:`ingest` reports ``lock_wait`` before waiting.
Every call of :func:`ingest` ends with exactly one ``done`` or ``failed``. Hooks are
called on the thread running the ingest; a subscriber that keeps per-ingest state
must not be shared by ingests running at once.
"""

from __future__ import annotations

from typing import Protocol

from ingestq.ingest.outcome import IngestResult, RefBusy
from ingestq.ingest.request import IngestRequest


class IngestHooks(Protocol):
    """The subscriber of one ingest: lifecycle events, and the two questions the core
    asks between chunks (cancelled? lock lost?)."""

    def started(self, request: IngestRequest, source: str) -> None:
        """The attempt holds the ref's writer (every lock taken) and fetches ``request``
        from the source named ``source``."""
        ...

    def resumed(self, offset: int) -> None:
        """The source was opened at the stored ``offset`` (> 0): the attempt continues a
        partial ingest instead of starting over."""
        ...

    def progress(self, offset: int, total: int) -> None:
        """Called once when the copy starts (``offset`` = where it starts) and after every
        chunk (``offset`` = bytes in the ingest); ``total`` is the size, 0 if unknown."""
        ...

    def lock_wait(self, busy: RefBusy, delay: float) -> None:
        """:func:`ingest` found the ref locked by ``busy.holder`` and sleeps ``delay``
        seconds before the next attempt."""
        ...

    def done(self, result: IngestResult) -> None:
        """The ingest ended with the blob committed (fetched now, or already there)."""
        ...

    def failed(self, error: Exception) -> None:
        """The ingest ended with ``error`` (raised to the caller right after)."""
        ...

    def cancelled(self) -> bool:
        """Polled between chunks and lock waits; True stops the ingest with Canceled."""
        ...

    def lock_lost(self) -> bool:
        """True once the writer's lock was lost under the attempt (an expired lease):
        content checks then fail as a retry-safe Unavailable and the writer's file is
        left alone."""
        ...


class Hooks:
    """An :class:`IngestHooks` that does nothing: subclass it and override what you need."""

    def started(self, request: IngestRequest, source: str) -> None:
        """See :meth:`IngestHooks.started`."""

    def resumed(self, offset: int) -> None:
        """See :meth:`IngestHooks.resumed`."""

    def progress(self, offset: int, total: int) -> None:
        """See :meth:`IngestHooks.progress`."""

    def lock_wait(self, busy: RefBusy, delay: float) -> None:
        """See :meth:`IngestHooks.lock_wait`."""

    def done(self, result: IngestResult) -> None:
        """See :meth:`IngestHooks.done`."""

    def failed(self, error: Exception) -> None:
        """See :meth:`IngestHooks.failed`."""

    def cancelled(self) -> bool:
        """Never cancelled."""
        return False

    def lock_lost(self) -> bool:
        """Never lost."""
        return False


NO_HOOKS = Hooks()


class CombinedHooks:
    """Several subscribers as one: every event goes to each, in order; the ingest is
    cancelled (or its lock lost) when any subscriber says so."""

    def __init__(self, *subscribers: IngestHooks) -> None:
        self.subscribers = subscribers

    def started(self, request: IngestRequest, source: str) -> None:
        for s in self.subscribers:
            s.started(request, source)

    def resumed(self, offset: int) -> None:
        for s in self.subscribers:
            s.resumed(offset)

    def progress(self, offset: int, total: int) -> None:
        for s in self.subscribers:
            s.progress(offset, total)

    def lock_wait(self, busy: RefBusy, delay: float) -> None:
        for s in self.subscribers:
            s.lock_wait(busy, delay)

    def done(self, result: IngestResult) -> None:
        for s in self.subscribers:
            s.done(result)

    def failed(self, error: Exception) -> None:
        for s in self.subscribers:
            s.failed(error)

    def cancelled(self) -> bool:
        return any(s.cancelled() for s in self.subscribers)

    def lock_lost(self) -> bool:
        return any(s.lock_lost() for s in self.subscribers)


def combine(*subscribers: IngestHooks) -> IngestHooks:
    """One :class:`IngestHooks` for ``subscribers``: :data:`NO_HOOKS` for none, the
    subscriber itself for one, else a :class:`CombinedHooks` (nested ones flattened)."""
    flat: list[IngestHooks] = []
    for s in subscribers:
        if isinstance(s, CombinedHooks):
            flat.extend(s.subscribers)
        elif s is not NO_HOOKS:
            flat.append(s)
    if not flat:
        return NO_HOOKS
    if len(flat) == 1:
        return flat[0]
    return CombinedHooks(*flat)
