"""The one retry policy of failed job attempts, and the one backoff computation.

A :class:`RetryPolicy` is a frozen value: the first delay, the cap, the jitter, the
growth factor and the number of attempts. It decides two things for every backend:

* **whether** to retry: an attempt that failed with Unavailable (a source answering
  429/503/5xx, a timeout, a transport error, a lost lease) is *transient* and retried
  while attempts remain; every other error is *permanent* and fails the job at once;
* **when**: :meth:`RetryPolicy.backoff` (capped exponential, with jitter), but never
  sooner than the error's ``retry_after`` detail (the server's Retry-After, seconds,
  itself capped).

Who uses it: the Celery tasks turn :meth:`RetryPolicy.delay` into a ``self.retry``
countdown (:mod:`ingestq.tasks.ingest_task`, :mod:`ingestq.tasks.pull_task`); the
in-process runners call :meth:`RetryPolicy.run` (:mod:`ingestq.jobs.local`). The same
backoff paces a queued job's lock waits, the pull finalize polls and a producer's
polls of a job (with ``jitter=0``). The per-job values come from
:class:`ingestq.jobs.config.Settings` (``source_retry``, ``lock_wait_retry``).

The wait for a locked ref *inside* one attempt (``ingestq.store.helpers.Backoff``) is
not a retry of a failed attempt and is not governed here.

Imports errdefs only.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ingestq import errdefs

T = TypeVar("T")


def retry_after(err: BaseException) -> float | None:
    """The ``retry_after`` detail of ``err`` in seconds, or None when it has none (or
    one that is not a non-negative number)."""
    if not isinstance(err, errdefs.ErrdefsError):
        return None
    text = err.details.get("retry_after")
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@dataclass(frozen=True)
class RetryPolicy:
    """How failed attempts are retried (see the module docstring).

    Attributes:
        first: the backoff bound of the first retry, seconds.
        cap: the largest delay, seconds (also caps ``retry_after``).
        jitter: the randomised fraction of each delay: a delay is uniform in
            ``[bound * (1 - jitter), bound]``; 0 gives the bound itself.
        max_attempts: attempts in all, the first included (``None``: unbounded); 1
            means no retry.
        multiplier: how much the bound grows per retry.

    Raises InvalidArgument (at construction) for values out of range.
    """

    first: float = 1.0
    cap: float = 300.0
    jitter: float = 0.5
    max_attempts: int | None = 9
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not (self.first > 0 and self.cap > 0):
            raise errdefs.InvalidArgument(f"retry delays must be positive: {self}")
        if not 0.0 <= self.jitter <= 1.0:
            raise errdefs.InvalidArgument(f"retry jitter must be in [0, 1]: {self}")
        if self.multiplier < 1.0:
            raise errdefs.InvalidArgument(f"retry multiplier must be at least 1: {self}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise errdefs.InvalidArgument(f"max_attempts must be at least 1: {self}")

    def with_retries(self, retries: int | None) -> RetryPolicy:
        """This policy with at most ``retries`` retries (``None``: unchanged), as a
        producer's ``--retries`` asks. InvalidArgument for a negative number."""
        if retries is None:
            return self
        if retries < 0:
            raise errdefs.InvalidArgument(f"retries must be at least 0, got {retries}")
        return dataclasses.replace(self, max_attempts=retries + 1)

    def backoff(self, retry: int) -> float:
        """The delay before retry number ``retry`` (0-based): the bound grows from
        ``first`` by ``multiplier`` per retry up to ``cap``; with jitter the delay is
        uniform in ``[bound * (1 - jitter), bound]``, so many waiters spread out but
        none comes back much sooner than the bound."""
        growth = self.multiplier ** min(max(retry, 0), 64)
        bound = min(self.cap, self.first * growth)
        if self.jitter == 0.0:
            return bound
        return random.uniform(bound * (1.0 - self.jitter), bound)

    @staticmethod
    def transient(err: BaseException) -> bool:
        """Whether ``err`` may go away by itself: Unavailable, and nothing else."""
        return isinstance(err, errdefs.Unavailable)

    def delay(self, retry: int, err: BaseException) -> float | None:
        """The delay before retrying after attempt ``retry`` (0-based) failed with
        ``err``; None when ``err`` is permanent or no attempt is left. At least the
        error's ``retry_after`` (capped at ``cap``)."""
        if not self.transient(err):
            return None
        if self.max_attempts is not None and retry + 1 >= self.max_attempts:
            return None
        delay = self.backoff(retry)
        after = retry_after(err)
        if after is not None:
            delay = max(delay, min(after, self.cap))
        return delay

    def run(
        self,
        attempt: Callable[[], T],
        *,
        wait: Callable[[float], bool],
        what: str,
        on_retry: Callable[[errdefs.ErrdefsError, float], None] | None = None,
    ) -> T:
        """Call ``attempt`` until it returns, retrying transient failures per this
        policy. Between attempts ``on_retry(error, delay)`` is told, then
        ``wait(delay)`` sleeps and returns True when the job was canceled meanwhile.

        Raises the last error once it is permanent or no attempt is left, and
        Canceled (``<what> canceled``, caused by the last error) when ``wait`` says so.
        """
        retry = 0
        while True:
            try:
                return attempt()
            except errdefs.ErrdefsError as e:
                delay = self.delay(retry, e)
                if delay is None:
                    raise
                retry += 1
                if on_retry is not None:
                    on_retry(e, delay)
                if wait(delay):
                    raise errdefs.Canceled(f"{what} canceled") from e


__all__ = ["RetryPolicy", "retry_after"]
