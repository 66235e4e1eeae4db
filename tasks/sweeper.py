"""The orphan sweeper: puts back on the queue the messages a whole worker held when it
died (host lost, SIGKILL of its main process), long before Redis's visibility timeout
(12 h by default) would.

kombu's Redis transport keeps every message a worker has taken but not acked in the
``unacked`` hash (``delivery tag -> [message, exchange, routing key]``) and the
``unacked_index`` zset (scored by delivery time); with late acks that is every job a
worker runs, has reserved, or keeps as an ETA retry. One sweeper at a time (the holder
of the :data:`SWEEPER_REF` Redis lease, a thread of some live worker:
:class:`ingestq.tasks.periodic.Leader`) looks every
``Settings.sweep_interval`` seconds at the entries delivered more than an interval ago
and calls one *orphaned* when

* no live worker holds it: it is in no reply to ``inspect active/reserved/scheduled``
  (and the sweeper's own worker did reply, else nothing is decided), and
* for an ingest job, its ref's lease has lapsed (a running writer keeps it alive with
  its heartbeat, so a live but slow-to-answer worker never loses its job).

An entry found orphaned by two sweeps in a row is restored exactly as the visibility
timeout would do it (kombu's ``restore_by_tag``: in one transaction, off the unacked
index and back onto its queue, marked redelivered), so there is never a second copy of
the message; the job runs again on a live worker, counted as a redelivery, resuming
from its stored offset. A job that had in fact finished shows SUCCESS and Celery's
``worker_deduplicate_successful_tasks`` acks it without running; an ingest that
reaches a committed digest returns it without fetching.

Bound, with the defaults (lease ttl 30 s, interval 20 s): the dead worker's lease
lapses within 30 s, the sweeper lease (if the dead worker held it) too; two sweeps
later the message is back on the queue: about 75 s after the death, well within two
minutes, and a live worker with a free slot takes it at once.

Imports celery/kombu (through the app), redis, the job settings and this package's
keys, lease and Redis helpers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery

from ingestq import errdefs
from ingestq.jobs.config import Settings
from ingestq.jobs.records import KIND_INGEST
from ingestq.tasks import keys
from ingestq.tasks.lease import RedisLeaseLocker
from ingestq.tasks.periodic import Leader
from ingestq.tasks.redisconn import redis_client

log = logging.getLogger(__name__)

#: The lease whose holder is the one sweeper (a ref name no ingest uses).
SWEEPER_REF = "ingestq-sweeper"

#: Seconds to wait for the workers' replies to each inspect command.
REPLY_TIMEOUT = 1.0


@dataclass(frozen=True)
class Unacked:
    """A message some worker took and has not acked."""

    tag: str
    task_id: str
    delivered_at: float


def _text(v: object) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def parse_unacked(tag: str, payload: object, delivered_at: float) -> Unacked | None:
    """The entry of the ``unacked`` hash for ``tag``, or None when it is gone or is not
    a Celery task message."""
    if payload is None:
        return None
    try:
        message = json.loads(_text(payload))[0]
        task_id = message["headers"]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return Unacked(tag, str(task_id), delivered_at) if task_id else None


def held_task_ids(replies: Iterable[Mapping[str, Any] | None]) -> set[str]:
    """The task ids in replies to ``inspect active``, ``reserved`` and ``scheduled``
    (the last nests the request under ``request``)."""
    ids: set[str] = set()
    for reply in replies:
        for tasks in (reply or {}).values():
            for t in tasks or []:
                req = t.get("request", t) if isinstance(t, dict) else {}
                if isinstance(req, dict) and req.get("id"):
                    ids.add(str(req["id"]))
    return ids


class Sweeper:
    """Finds and restores the messages of dead workers (see the module docstring).

    Args:
        app: the Celery app (its broker holds the unacked messages).
        settings: the lock URL, lease ttl and sweep interval.
        node: the Celery node name of the worker running this sweeper (it must answer
            the inspect commands, proof that they work).
    """

    def __init__(self, app: Celery, settings: Settings, node: str) -> None:
        if settings.lock_url is None:
            raise errdefs.FailedPrecondition("the sweeper needs Redis for its lease")
        self.app = app
        self.node = node
        self.interval = settings.sweep_interval
        self.locker = RedisLeaseLocker(settings.lock_url, settings.lease_ttl)
        self._client = redis_client(settings.lock_url, socket_timeout=10.0)
        self._suspects: set[str] = set()
        self._leader = Leader(
            self.locker, SWEEPER_REF, node, self.interval, self.sweep,
            name="ingestq-sweeper", announce="sweeps for dead workers' jobs",
        )  # fmt: skip

    # leadership ----------------------------------------------------------------------
    def _lead(self) -> bool:
        """Whether this sweeper holds the sweeper lease (taking it when free)."""
        return self._leader.lead()

    # one pass ------------------------------------------------------------------------
    def sweep(self) -> list[str]:
        """One pass: the task ids whose messages were put back on the queue."""
        if not self._lead():
            self._suspects.clear()
            return []
        with self.app.connection_for_write() as conn:
            channel: Any = conn.default_channel
            with channel.conn_or_acquire() as broker:
                entries = self._old_unacked(channel, broker)
            if not entries:
                self._suspects.clear()
                return []
            held = self._held_by_live_workers()
            if held is None:
                return []
            orphans = {e.tag: e for e in entries if e.task_id not in held and self._lapsed(e)}
            confirmed = [e for tag, e in orphans.items() if tag in self._suspects]
            self._suspects = set(orphans) - {e.tag for e in confirmed}
            for e in confirmed:
                channel.qos.restore_by_tag(e.tag)
                log.warning(
                    "job %s was held by a worker that is gone: put back on the queue",
                    e.task_id,
                )
        return [e.task_id for e in confirmed]

    def _old_unacked(self, channel: Any, broker: redis.Redis) -> list[Unacked]:
        """The unacked messages delivered more than an interval ago."""
        ceiling = time.time() - self.interval
        index: list[Any] = list(
            broker.zrangebyscore(channel.unacked_index_key, "-inf", ceiling, withscores=True)
        )
        if not index:
            return []
        tags = [_text(tag) for tag, _ in index]
        payloads = broker.hmget(channel.unacked_key, tags)
        found = (
            parse_unacked(tag, payload, float(score))
            for tag, payload, (_, score) in zip(tags, payloads, index, strict=True)
        )
        return [e for e in found if e is not None]

    def _held_by_live_workers(self) -> set[str] | None:
        """The task ids every live worker holds; None when that cannot be told (this
        sweeper's own worker did not answer)."""
        inspect = self.app.control.inspect(timeout=REPLY_TIMEOUT)
        replies = []
        for command in (inspect.active, inspect.reserved, inspect.scheduled):
            try:
                reply = command()
            except Exception as e:  # a broker hiccup: decide nothing this time
                log.info("sweeper: inspect failed: %s", e)
                return None
            if not reply or self.node not in reply:
                return None
            replies.append(reply)
        return held_task_ids(replies)

    def _lapsed(self, entry: Unacked) -> bool:
        """False while the job is an ingest whose ref's lease is still held."""
        try:
            kind, ref = self._client.hmget(keys.job_key(entry.task_id), ["kind", "ref"])
            if kind is None or _text(kind) != KIND_INGEST or not ref:
                return True
            return not self._client.exists(keys.ref_keys(_text(ref)).lease)
        except redis.RedisError:
            return False

    # the thread ----------------------------------------------------------------------
    def start(self) -> None:
        """Sweep every interval in a daemon thread until :meth:`stop`."""
        self._leader.start()

    def stop(self) -> None:
        """Stop sweeping and give the sweeper lease up."""
        self._leader.stop(self.interval + 5 * REPLY_TIMEOUT)


__all__ = ["SWEEPER_REF", "Sweeper", "Unacked", "held_task_ids", "parse_unacked"]
