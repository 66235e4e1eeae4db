"""Celery's Redis result backend with the result write in one round trip, carrying the
task's lease releases.

Celery's :class:`~celery.backends.redis.RedisBackend` stores a result in two round
trips: a GET (a stored SUCCESS is never overwritten, so a late duplicate cannot hide
the outcome), then SETEX and PUBLISH in a MULTI. :class:`IngestqRedisBackend` does the
same in one script (``tasks/lua/store_result.lua``) and, in that script, runs the lease
releases the task put off (:func:`ingestq.tasks.lease.defer_releases`) when the lease
lives on the same Redis as the results: a 4 KiB ingest's lease goes with its result
written, in the round trip that writes it. The meta, its expiry (``result_expires``,
``result_failure_expires`` for a FAILURE), the PUBLISH on the key's channel and the
retries on connection errors are Celery's; everything else (reads, groups, chords) is
inherited unchanged.

Imports celery, redis and this package's lease and Lua scripts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis
from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from celery.utils.time import get_exponential_backoff_interval

from ingestq.tasks.lease import PendingRelease, give_back, take_releases
from ingestq.tasks.lua import load

if TYPE_CHECKING:
    from redis.commands.core import Script

#: ``store_result.lua`` with ``release.lua`` prepended as ``release(KEYS, ARGV)``, so
#: both scripts keep one text each.
STORE_RESULT_SCRIPT = (
    "local function release(KEYS, ARGV)\n" + load("release") + "\nend\n" + load("store_result")
)


class IngestqRedisBackend(RedisBackend):  # type: ignore[misc]
    """The Redis result backend of ingestq's app (see the module docstring). Made with
    the app's ``result_backend`` URL when Celery passes none."""

    def __init__(self, *args: Any, url: str | None = None, **kwargs: Any) -> None:
        app = kwargs.get("app")
        if url is None and app is not None:
            url = app.conf.result_backend
        super().__init__(*args, url=url, **kwargs)
        if self.connparams.get("connection_class") is redis.UnixDomainSocketConnection:
            # Celery passes its TCP keepalive setting on, which a socket connection
            # refuses (TypeError at the first command).
            self.connparams.pop("socket_keepalive", None)
            self.connparams.pop("socket_keepalive_options", None)
        self._store_script: Script | None = None

    def _script(self) -> Script:
        if self._store_script is None:
            self._store_script = self.client.register_script(STORE_RESULT_SCRIPT)
        return self._store_script

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Celery's ``_store_result`` in one script (see the module docstring). Raises
        BackendStoreError for a meta too large for Redis, redis errors as Celery's does
        (retried per ``result_backend_always_retry``); the releases are put back for the
        task's end when the script fails."""
        key, value, expires = self._write_of(task_id, result, state, traceback, request)
        taken = take_releases()
        releases = [p for p in taken if p.locker.url == self.url]
        give_back([p for p in taken if p.locker.url != self.url])  # another Redis
        try:
            self.ensure(self._run, (key, value, expires, releases))
        except BaseException:
            give_back(releases)
            raise
        return result

    def store_many(self, outcomes: Sequence[tuple[str, Any, str, Any]]) -> None:
        """Store each ``(task id, result, state, request)`` of ``outcomes`` as
        :meth:`store_result` would (the same meta, extended fields from ``request``,
        expiry, PUBLISH and SUCCESS guard), all in one round trip: the results of a
        batch's jobs. Retried as :meth:`store_result` is (``result_backend_always_retry``,
        ``result_backend_max_retries``, Celery's backoff); BackendStoreError for a meta
        too large for Redis (nothing is written then); the last redis error when the
        retries run out."""
        writes = [
            self._write_of(task_id, self.encode_result(result, state), state, None, request)
            for task_id, result, state, request in outcomes
        ]
        if not writes:
            return
        retries = 0
        while True:
            try:
                self.ensure(self._run_many, (writes,))
                return
            except Exception as exc:
                if not (self.always_retry and self.exception_safe_to_retry(exc)):
                    raise
                if retries >= self.max_retries:
                    raise
                retries += 1
                time.sleep(get_exponential_backoff_interval(
                    self.base_sleep_between_retries_ms, retries,
                    self.max_sleep_between_retries_ms, True) / 1000)  # fmt: skip

    def _write_of(
        self, task_id: str | bytes, result: Any, state: str, traceback: Any, request: Any
    ) -> tuple[Any, Any, int]:
        """The key, the encoded meta and the seconds to live (0: none) of ``task_id``'s
        ``result`` (already encoded) as Celery's Redis backend writes them.
        BackendStoreError for a meta too large for Redis."""
        meta = self._get_result_meta(result=result, state=state, traceback=traceback,
                                     request=request)  # fmt: skip
        meta["task_id"] = task_id.decode() if isinstance(task_id, bytes) else task_id
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError(
                "value too large for Redis backend", state=state, task_id=task_id
            )
        expires = self.failure_expires if state == states.FAILURE else self.expires
        return self.get_key_for_task(task_id), value, int(expires or 0)

    def _run_many(self, writes: list[tuple[Any, Any, int]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        script = self._script()
        for key, value, expires in writes:
            script(keys=[key], args=[value, expires], client=pipe)
        pipe.execute()

    def _run(self, key: Any, value: Any, expires: int, releases: list[PendingRelease]) -> None:
        keys, args = [key], [value, expires]
        for p in releases:
            keys.extend(p.keys)
            args.extend(p.args)
        self._script()(keys=keys, args=args)


__all__ = ["STORE_RESULT_SCRIPT", "IngestqRedisBackend"]
