"""The Redis status board: every live ingest across all workers.

Each write publishes a hash ``ingestq:status:{sha256(ref)}`` (ref, offset, total,
expected, started_at, updated_at, holder, host, pid, fence, job_id, source, rate) and
its member in the index zset ``ingestq:active`` scored by the Redis server's ``TIME`` of
the last heartbeat. Both are written only by the lease heartbeat script, and only while
the writer still holds the lease token (see :mod:`ingestq.tasks.lease`). The hash has a TTL of
about three heartbeats, so a dead worker's entry expires by itself; readers also filter
the index by score, so stale members are invisible at once and swept on read.

Listing is ``ZRANGEBYSCORE`` (inside ``active.lua``) followed by pipelined ``HGETALL``;
there is no SCAN or KEYS anywhere. Entries read as the job interface's
:class:`ingestq.jobs.api.ActiveIngest`.

Imports redis, errdefs, the job interface and this package's keys, lease helpers and
Lua scripts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from ingestq import errdefs
from ingestq.jobs.api import ActiveIngest
from ingestq.tasks import keys
from ingestq.tasks.lease import ms_to_datetime
from ingestq.tasks.lua import load
from ingestq.tasks.redisconn import decode_hash


def _parse(raw: Mapping[Any, Any]) -> ActiveIngest | None:
    d = decode_hash(raw)
    try:
        return ActiveIngest(
            ref=d["ref"],
            offset=int(d.get("offset", "0")),
            total=int(d.get("total", "0")),
            expected=d.get("expected", ""),
            started_at=ms_to_datetime(d["started_at"]),
            updated_at=ms_to_datetime(d["updated_at"]),
            holder=d.get("holder", ""),
            host=d.get("host", ""),
            pid=int(d.get("pid", "0")),
            fence=int(d.get("fence", "0")),
            job_id=d.get("job_id", ""),
            source=d.get("source", ""),
            rate=float(d.get("rate", "0")),
        )
    except (KeyError, ValueError, OverflowError, OSError):  # a timestamp out of range
        return None


class StatusBoard:
    """Reads the board. ``stale`` is how old (seconds) a last heartbeat may be."""

    def __init__(self, client: redis.Redis, stale: float = 5.0) -> None:
        self._client = client
        self._stale_ms = int(stale * 1000)
        self._active = client.register_script(load("active"))

    def list_active(self) -> list[ActiveIngest]:
        """Every live ingest, oldest first. Unavailable when Redis cannot be reached."""
        try:
            members = self._active(keys=[keys.ACTIVE], args=[self._stale_ms])
            if not members:
                return []
            pipe = self._client.pipeline(transaction=False)
            for member in members:
                pipe.hgetall(keys.status_key(member.decode()))
            hashes = pipe.execute()
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"status board: {e}") from e
        out = [a for a in (_parse(h) for h in hashes if h) if a is not None]
        out.sort(key=lambda a: a.started_at)
        return out

    def get(self, ref: str) -> ActiveIngest | None:
        """The live status of ``ref``, or None."""
        try:
            raw = self._client.hgetall(keys.ref_keys(ref).status)
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"status board: {e}") from e
        return _parse(raw) if raw else None


__all__ = ["StatusBoard"]
