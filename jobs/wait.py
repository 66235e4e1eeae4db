"""Waiting for a job's outcome: one polling loop for every job handle of both backends.

Imports errdefs and the retry policy's backoff (the poll interval grows by 1.5 per poll,
without jitter, up to a cap).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from ingestq import errdefs
from ingestq.jobs.retry import RetryPolicy

T = TypeVar("T")

#: The first poll interval, seconds.
FIRST_POLL = 0.01


def poll_outcome(
    job_id: str,
    outcome: Callable[[], object],
    exists: Callable[[], bool],
    result_type: type[T],
    timeout: float | None,
    *,
    max_delay: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Poll a job until ``outcome()`` gives a ``result_type`` (returned) or an errdefs
    error (raised); ``outcome()`` gives None while the job runs. Between two polls it
    calls ``sleep(delay)``, which may return early (a backend that is told when the job's
    state changes wakes the loop at once).

    NotFound when the job is unknown (``exists()`` false while there is no outcome),
    DeadlineExceeded after ``timeout`` seconds; an Unavailable backend (Redis
    restarting) is waited out until the deadline.
    """
    schedule = RetryPolicy(first=FIRST_POLL, cap=max_delay, jitter=0.0, max_attempts=None,
                           multiplier=1.5)  # fmt: skip
    deadline = None if timeout is None else time.monotonic() + timeout
    known = False
    polls = 0
    while True:
        result: object = None
        try:
            result = outcome()
            if result is None and not known:
                known = exists()
                if not known:
                    raise errdefs.NotFound(f"job {job_id}")
        except errdefs.Unavailable:
            result = None
        if isinstance(result, result_type):
            return result
        if isinstance(result, errdefs.ErrdefsError):
            raise result
        delay = schedule.backoff(polls)
        polls += 1
        if deadline is not None and time.monotonic() + delay > deadline:
            raise errdefs.DeadlineExceeded(f"job {job_id} not done after {timeout}s")
        sleep(delay)


__all__ = ["poll_outcome"]
