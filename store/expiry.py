"""How long a producer's blob is kept: durations as people write them (``30s``,
``10m``, ``2h``, ``7d``, ``1w`` or seconds) and the label a producer's ingest commits
its blob with. gc reads the label (:mod:`ingestq.store.gc`); this module stays small so
that a producer queueing jobs loads none of gc."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from ingestq import errdefs
from ingestq.store.values import utcnow

#: A blob a producer asked for (``ingestq ingest``): ``never`` (kept until nothing is
#: left to say otherwise: a root) or the RFC 3339 time after which it is collectable.
REQUESTED_LABEL = "ingestq.expire-at"
#: The value of :data:`REQUESTED_LABEL` for a blob kept without expiry.
NEVER = "never"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``30s``, ``10m``, ``2h``, ``7d``, ``1w`` or plain seconds as a timedelta.
    InvalidArgument for anything else (a negative duration, or one longer than a
    timedelta holds)."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise errdefs.InvalidArgument(f"duration {text!r}: use e.g. 30s, 10m, 2h, 7d")
    try:
        return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2) or "s"])
    except OverflowError:
        raise errdefs.InvalidArgument(f"duration {text!r} is too long") from None


def requested_labels(expire: timedelta | str | None, now: datetime | None = None) -> dict[str, str]:
    """The label a producer's ingest commits its blob with: :data:`REQUESTED_LABEL`
    ``never`` without ``expire``, else the time ``now + expire`` (RFC 3339, UTC).
    InvalidArgument for a malformed duration, or one that ends past the year 9999."""
    if expire is None:
        return {REQUESTED_LABEL: NEVER}
    delta = parse_duration(expire) if isinstance(expire, str) else expire
    try:
        at = (now or utcnow()) + delta
    except OverflowError:
        raise errdefs.InvalidArgument(f"expire {expire}: ends past the year 9999") from None
    return {REQUESTED_LABEL: at.astimezone(UTC).isoformat().replace("+00:00", "Z")}


__all__ = ["NEVER", "REQUESTED_LABEL", "parse_duration", "requested_labels"]
