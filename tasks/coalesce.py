"""Small ingest jobs that came as messages of their own, run together by the worker.

A producer that submits jobs one by one (``submit_ingest``, ``enqueue_ingest``) sends
one ``ingestq.ingest`` message per job. For a small local-file job each message costs a
worker more in Celery's dispatch to its pool and its result writes than in the ingest
itself. So the worker's consumer (this module is the ingest task's Celery
``Strategy``) gathers such messages before they reach the pool, and runs them in one
pool process as a batch message's jobs are run
(:func:`ingestq.tasks.batch_task.run_coalesced`): each keeps its own id, result,
errdefs kind, record and cancel flag, and a job to retry leaves as a message of its
own.

* What is gathered: a first delivery (not redelivered, no retries, no ETA, no expiry)
  of a job that :func:`~ingestq.tasks.batching.batchable` admits, whose only keyword
  is ``max_source_retries``, and that no batch handed on
  (:data:`~ingestq.tasks.batching.HANDED_ON_HEADER`: a job that would not take the
  small-blob path, or that retries). Anything else runs as Celery runs any task.
* How long: the first job waits at most ``INGESTQ_COALESCE_WINDOW`` seconds (default
  5 ms; 0 turns this off) for up to :data:`~ingestq.tasks.batching.BATCH_JOBS` jobs;
  while every pool process is running a batch, jobs gather until one returns (group
  commit: the busier the worker, the larger its batches).
  While a job is held the consumer's prefetch is one higher, so the next message can
  come in meanwhile (the worker's prefetch is otherwise 1); at most
  :data:`MAX_RAISED` messages are held or running so.
* Acks: each message is acked when its batch has returned (late acks, as for the
  ingest task). When the pool process is lost or the batch failed as a whole, every
  message of it is requeued: each comes back redelivered and runs on its own, where
  the ingest task's redelivery count applies. A warm shutdown leaves the messages it
  still holds unacked, and the broker gives them back.
* Revoked while held: Celery's own revoke check runs before the batch is sent.
* Pools: prefork (the default) and solo. With another pool (threads, eventlet, gevent)
  every job runs as Celery runs any task.

Imports celery, the ingest request and this package's batching, batch task, app and
names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.solo import TaskPool as SoloPool
from celery.worker.request import Request
from celery.worker.state import task_ready
from celery.worker.strategy import default as default_strategy

from ingestq.ingest.request import IngestRequest
from ingestq.tasks.app import settings_of
from ingestq.tasks.batch_task import run_coalesced
from ingestq.tasks.batching import BATCH_JOBS, HANDED_ON_HEADER, BatchEntry, batchable
from ingestq.tasks.names import TASK_INGEST

log = logging.getLogger(__name__)

#: The most messages a consumer holds or runs gathered at once (two batches: one
#: running, one filling).
MAX_RAISED = 2 * BATCH_JOBS


#: The pools whose result callbacks run on the consumer's own thread (prefork: its
#: event loop; solo: inline), where the coalescer's state may be touched without locks.
#: Other pools (threads, eventlet, gevent) run every job as Celery does.
_CALLBACKS_ON_THE_LOOP = (PreforkPool, SoloPool)


def strategy(task: Task, app: Celery, consumer: Any, **options: Any) -> Callable[..., Any]:
    """The ingest task's Celery strategy: Celery's own, whose requests go through a
    :class:`Coalescer` (unless ``INGESTQ_COALESCE_WINDOW`` is 0)."""
    window = settings_of(app).coalesce_window
    gather = window > 0 and isinstance(consumer.pool, _CALLBACKS_ON_THE_LOOP)
    routed = _Routed(consumer, Coalescer(consumer, window).handle) if gather else consumer
    handler: Callable[..., Any] = default_strategy(task, app, routed, **options)
    return handler


class _Routed:
    """The consumer as Celery's strategy sees it, but for where requests go."""

    def __init__(self, consumer: Any, on_task_request: Callable[[Request], None]) -> None:
        self._consumer = consumer
        self.on_task_request = on_task_request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def gatherable(req: Request) -> BatchEntry | None:
    """The batch entry of ``req`` when it may run gathered with others (see the module
    docstring), else None."""
    if req.name != TASK_INGEST or req.eta is not None or req.expires is not None:
        return None
    if (req.delivery_info or {}).get("redelivered") or req.request_dict.get("retries"):
        return None
    if req.request_dict.get(HANDED_ON_HEADER):  # a batch found it must run alone
        return None
    args, kwargs = req.args, req.kwargs
    if not (isinstance(args, list | tuple) and len(args) == 1 and isinstance(args[0], dict)):
        return None
    if not isinstance(kwargs, dict) or set(kwargs) - {"max_source_retries"}:
        return None
    retries = kwargs.get("max_source_retries")
    if retries is not None and (type(retries) is not int or retries < 0):
        return None
    try:
        request = IngestRequest.from_json(args[0])
    except Exception:  # malformed: the ingest task fails it with its kind
        return None
    if not batchable(request):
        return None
    return BatchEntry(req.id, args[0], retries)


#: The task event a monitor (Flower, ``celery events``) gets for each outcome.
_EVENTS = {"SUCCESS": "task-succeeded", "FAILURE": "task-failed", "RETRY": "task-retried"}


class Coalescer:
    """Gathers a consumer's small ingest requests and runs them as batches in its
    pool (see the module docstring); ``window``: seconds the first one waits."""

    def __init__(self, consumer: Any, window: float) -> None:
        self._consumer = consumer
        self._window = window
        self._held: list[tuple[Request, BatchEntry]] = []
        self._timer: Any = None
        self._raised = 0
        self._running = 0
        self._slots = max(1, int(getattr(consumer.pool, "num_processes", 1) or 1))

    def handle(self, req: Request) -> None:
        """Hold ``req`` for the next batch, or pass it to Celery's pool as usual."""
        entry = gatherable(req) if self._raised < MAX_RAISED else None
        if entry is None:
            self._consumer.on_task_request(req)
            return
        self._held.append((req, entry))
        self._raised += 1
        self._consumer.qos.increment_eventually()
        if len(self._held) >= BATCH_JOBS:
            self.flush()
        elif self._timer is None and self._running < self._slots:
            # With every pool process running a batch, the held jobs go when one
            # returns (_settle): they gather for as long as a batch takes.
            self._timer = self._consumer.timer.call_after(self._window, self.flush)

    def flush(self) -> None:
        """Send the held requests to the pool as one batch (the revoked ones are
        settled by Celery instead)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held = self._held, []
        if not held:
            return
        live = [(req, entry) for req, entry in held if not req.revoked()]
        self._lower(len(held) - len(live))
        if not live:
            return
        reqs = [req for req, _ in live]

        def accepted(pid: int, time_accepted: float) -> None:
            for req in reqs:
                req.on_accepted(pid, time_accepted)

        def returned(states: object) -> None:
            if isinstance(states, dict):
                log.info("ran %d gathered jobs in one batch", len(reqs))
                self._settle(reqs, states)
            else:
                self._settle(reqs, None)

        def failed(exc_info: object) -> None:  # the pool process was lost, or worse
            log.warning("%d gathered jobs requeued: %s", len(reqs), exc_info)
            self._settle(reqs, None)

        self._running += 1
        try:
            self._consumer.pool.apply_async(
                run_coalesced,
                args=([entry.to_json() for _, entry in live], reqs[0].hostname),
                accept_callback=accepted,
                callback=returned,
                error_callback=failed,
            )
        except Exception as e:  # the pool is closing: the broker gives them back
            log.warning("%d gathered jobs not run: %s", len(reqs), e)
            self._settle(reqs, None)

    def _settle(self, reqs: list[Request], states: dict[str, str] | None) -> None:
        """Ack each request of a batch that returned ``states`` (job id -> Celery
        state), announcing its outcome to event monitors; requeue each when the batch
        failed as a whole (None)."""
        self._running -= 1
        for req in reqs:
            state = None if states is None else states.get(req.id)
            task_ready(req, successful=state == "SUCCESS")
            if state is None:
                req.reject(requeue=True)
                continue
            req.acknowledge()
            if state in _EVENTS:
                req.send_event(_EVENTS[state])
        self._lower(len(reqs))
        if self._held and self._timer is None:
            self.flush()

    def _lower(self, n: int) -> None:
        if n:
            self._raised -= n
            self._consumer.qos.decrement_eventually(n)


__all__ = ["MAX_RAISED", "Coalescer", "gatherable", "strategy"]
