"""One runner at a time across hosts: :class:`Leader` runs a step every interval in a
daemon thread of a worker's main process, and tells the step whether this worker holds
a named Redis lease (:mod:`ingestq.tasks.lease`), taking it when it is free. The lease's
heartbeat keeps it while the worker lives; when the worker dies it lapses within the
lease ttl and another worker's next step takes it. The orphan sweeper
(:mod:`ingestq.tasks.sweeper`) and the periodic gc (:mod:`ingestq.tasks.gcrunner`) use it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ingestq import errdefs
from ingestq.tasks.lease import RedisLease, RedisLeaseLocker

log = logging.getLogger(__name__)


class Leader:
    """Holder (or not) of the lease ``ref`` for worker ``node``; runs ``step`` every
    ``interval`` seconds once started (thread ``name``). ``step`` calls :meth:`lead` to
    learn whether it may act; taking the lease logs "this worker (<node>) <announce>".
    The step's exceptions are logged and the next interval starts afresh."""

    def __init__(
        self,
        locker: RedisLeaseLocker,
        ref: str,
        node: str,
        interval: float,
        step: Callable[[], object],
        *,
        name: str,
        announce: str,
    ) -> None:
        self.locker = locker
        self.ref = ref
        self.node = node
        self.interval = interval
        self._step = step
        self._name = name
        self._announce = announce
        self._lease: RedisLease | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def lead(self) -> bool:
        """Whether this worker holds the lease (taking it when free)."""
        if self._lease is not None and not self._lease.lost:
            return True
        self._lease = None
        try:
            self._lease = self.locker.try_lock(self.ref, self.node)
        except errdefs.Unavailable:
            return False
        log.info("this worker (%s) %s", self.node, self._announce)
        return True

    def start(self) -> None:
        """Run the step every interval in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._step()
            except Exception:  # keep going; the next pass starts afresh
                log.exception("%s pass failed", self._name)

    def stop(self, timeout: float) -> None:
        """Stop (waiting up to ``timeout`` seconds for a running step) and give the
        lease up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._lease is not None:
            self._lease.release()
            self._lease = None


__all__ = ["Leader"]
