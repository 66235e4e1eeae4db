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
* Fair to other jobs: a job is held only while some pool process is free of jobs that
  were not gathered, and a job that is not gathered is passed to the pool only after
  the held ones are sent. Time limits (the task's, the message's or the worker's) turn
  gathering off, as a batch would run under one job's limit.
* Pools: prefork (the default) and solo. With another pool (threads, eventlet, gevent)
  every job runs as Celery runs any task.

Imports celery, the ingest request and this package's batching, batch task, app and
names.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.solo import TaskPool as SoloPool
from celery.worker.request import Request
from celery.worker.state import reserved_requests, task_ready
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

#: Each consumer's coalescer: a broker reconnect builds the strategy again, and the
#: coalescer of the lost connection must stop.
_CURRENT: weakref.WeakKeyDictionary[Any, Coalescer] = weakref.WeakKeyDictionary()


def strategy(task: Task, app: Celery, consumer: Any, **options: Any) -> Callable[..., Any]:
    """The ingest task's Celery strategy: Celery's own, whose requests go through a
    :class:`Coalescer`. Not with ``INGESTQ_COALESCE_WINDOW`` 0, another pool than
    prefork or solo, a consumer without an event loop, or time limits on the task or
    the pool (a batch would run under one job's limit)."""
    previous = _CURRENT.pop(consumer, None)
    if previous is not None:
        previous.close()
    window = settings_of(app).coalesce_window
    pool = consumer.pool
    pool_options = getattr(pool, "options", {})
    limits = (task.time_limit, task.soft_time_limit,
              pool_options.get("timeout"), pool_options.get("soft_timeout"))  # fmt: skip
    routed = consumer
    if (
        window > 0
        and getattr(consumer, "hub", None) is not None
        and isinstance(pool, _CALLBACKS_ON_THE_LOOP)
        and not any(limits)
    ):
        coalescer = Coalescer(consumer, window)
        _CURRENT[consumer] = coalescer
        routed = _Routed(consumer, coalescer.handle)
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
    docstring), else None. Raises nothing."""
    if req.name != TASK_INGEST or req.eta is not None or req.expires is not None:
        return None
    if (req.delivery_info or {}).get("redelivered") or req.request_dict.get("retries"):
        return None
    if req.request_dict.get(HANDED_ON_HEADER):  # a batch found it must run alone
        return None
    if any(req.time_limits or ()):  # a limit of its own, for its run alone
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
    pool (see the module docstring); ``window``: seconds the first one waits.

    A request is held only while some pool process has no job that was not gathered
    here (running or waiting for a process); anything not held is passed on after the
    held ones are sent, so it never gets a pool process ahead of them. Every method is
    called on the consumer's thread and raises nothing.
    """

    def __init__(self, consumer: Any, window: float) -> None:
        self._consumer = consumer
        self._window = window
        self._held: list[tuple[Request, BatchEntry]] = []
        self._mine: set[str] = set()  # ids held or running here
        self._timer: Any = None
        self._raised = 0
        self._running = 0
        self._slots = max(1, int(getattr(consumer.pool, "num_processes", 1) or 1))
        self._closed = False

    def handle(self, req: Request) -> None:
        """Hold ``req`` for the next batch, or pass it to Celery's pool as usual."""
        entry = None
        if (
            not self._closed
            and self._raised < MAX_RAISED
            and req.id not in self._mine
            and self._others_busy(req) < self._slots
        ):
            entry = gatherable(req)
        if entry is None:
            if self._held:
                self.flush()
            self._consumer.on_task_request(req)
            return
        self._held.append((req, entry))
        self._mine.add(req.id)
        self._raised += 1
        self._consumer.qos.increment_eventually()
        if len(self._held) >= BATCH_JOBS:
            self.flush()
        elif self._timer is None and self._running < self._slots:
            # With every pool process running a batch, the held jobs go when one
            # returns (_settle): they gather for as long as a batch takes.
            self._timer = self._consumer.timer.call_after(self._window, self.flush)

    def close(self) -> None:
        """Stop for good (the broker connection was lost): drop what is held unacked
        (the broker gives it back) and leave the new connection's prefetch alone."""
        self._closed = True
        self._cancel_timer()
        self._held.clear()
        self._mine.clear()
        self._raised = 0

    def flush(self) -> None:
        """Send the held requests to the pool as one batch (the revoked ones are
        settled by Celery instead)."""
        self._cancel_timer()
        held, self._held = self._held, []
        live = [(req, entry) for req, entry in held if not self._revoked(req)]
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

    def _others_busy(self, req: Request) -> int:
        """How many requests this worker has received and not finished that were not
        gathered here, ``req`` (received already) left out."""
        return sum(1 for r in reserved_requests if r.id not in self._mine and r is not req)

    def _revoked(self, req: Request) -> bool:
        """Whether ``req`` was revoked while held (Celery then settles it)."""
        try:
            gone = bool(req.revoked())
        except Exception as e:  # its REVOKED meta could not be written: run it
            log.warning("job %s: revoke check failed: %s", req.id, e)
            return False
        if gone:
            self._forget([req])
        return gone

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
                try:
                    req.send_event(_EVENTS[state])
                except Exception as e:
                    log.warning("job %s: event not sent: %s", req.id, e)
        self._forget(reqs)
        if self._held and self._timer is None:
            self.flush()

    def _forget(self, reqs: list[Request]) -> None:
        """Lower the prefetch by what holding ``reqs`` raised it (not after close)."""
        if self._closed:
            return
        self._mine.difference_update(req.id for req in reqs)
        self._raised -= len(reqs)
        self._consumer.qos.decrement_eventually(len(reqs))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


__all__ = ["MAX_RAISED", "Coalescer", "gatherable", "strategy"]
