"""Retry countdowns: capped exponential backoff with jitter."""

from __future__ import annotations

import random


def backoff(attempt: int, first: float, cap: float) -> float:
    """A delay for retry number ``attempt`` (0-based): uniform in [bound/2, bound] where
    the bound doubles from ``first`` up to ``cap`` seconds. The floor of half the bound
    keeps many waiters from hammering; the jitter spreads them."""
    bound = min(cap, first * (2 ** min(attempt, 30)))
    return random.uniform(bound / 2.0, bound)
