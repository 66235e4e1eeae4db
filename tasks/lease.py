"""Redis leases on refs: the cross-host :class:`store.locks.RefLocker`.

A lease is ``SET NX PX`` of a random token plus a fencing number that only grows
(``tasks/lua/acquire.lua``): ``max(Redis TIME in microseconds, last fence + 1)``, the
last fence kept in a key that expires :data:`FENCE_TTL` after the ref's last grant
(every key of a ref expires; once the fence key has gone, TIME alone is above every
earlier fence unless the server clock went back by more than that ttl).

While it is held, one heartbeat thread per process renews every lease it holds with a
token-checked ``PEXPIRE`` and publishes the write's status in the same script
(``heartbeat.lua``), using its own Redis client whose socket timeout is a sixth of the
TTL. Release is compare-and-delete (``release.lua``); a task may put its releases off
(:func:`defer_releases`) so that its result write runs them in the same round trip
(:mod:`ingestq.tasks.backend`).

A lease is *lost* when a renewal finds another token, or when no renewal has succeeded
for ``ttl - margin`` by this process's monotonic clock (which keeps counting while the
process is stopped, so a SIGSTOPped worker knows at once after SIGCONT). Then
:meth:`RedisLease.check` raises FailedPrecondition("lease ... lost"); the store's writer
checks it before every write and before publishing, so the stale writer stops.

The holder hash names the holder's host, pid, process start time and node (boot id and
pid namespace). A lease whose holder is a process of this node that is gone (a pool
process killed mid-ingest, whose job is redelivered at once) is taken over without
waiting out its ttl: compare-and-set on its token with a new fence (``acquire.lua``).
A stopped or otherwise live holder, or one on another node, is never taken over.

Waiters see who holds a ref and how fresh its heartbeat is through :meth:`holder`.
Correctness does not rest on the lease: the store publishes content-addressed files.

Imports redis, errdefs, store (the lock protocols, holders) and this package's keys,
Lua scripts and Redis helpers.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis

from ingestq import errdefs
from ingestq.jobs.config import SocketURL, is_socket_url
from ingestq.store.locks import locked_error, own_domain
from ingestq.store.values import Holder
from ingestq.tasks import keys
from ingestq.tasks.lua import load
from ingestq.tasks.redisconn import decode_hash, redis_client

if TYPE_CHECKING:
    from redis.commands.core import Script

log = logging.getLogger(__name__)


#: Seconds a ref's fence key outlives its last grant (far longer than any lease).
FENCE_TTL = 7 * 24 * 3600.0


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` on this host (field 22 of ``/proc/<pid>/stat``,
    clock ticks since boot), which tells a live process from a later one that reuses its
    pid; None when there is no such process (or no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces and ")".
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def node_id() -> str:
    """Where a pid names one process: this boot of this machine and this pid namespace
    (``<boot id>:<pid namespace inode>``); empty when ``/proc`` cannot tell."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{boot}:{ns}"


def holder_process_gone(node: str, pid: int, started: str) -> bool:
    """True when the holder process ``pid`` (started at ``started``, ``/proc`` field 22)
    of node ``node`` is certainly gone: the node is this one, and no process has that
    pid or the one that has it started at another time (the pid was reused). False
    whenever that cannot be told (another node, no ``/proc``)."""
    mine = node_id()
    if not node or not mine or node != mine or pid <= 0:
        return False
    now = process_start(pid)
    return now is None or (bool(started) and now != started)


def ms_to_datetime(ms: int | float | bytes | str) -> datetime:
    """A Redis-TIME millisecond timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(int(ms) / 1000.0, UTC)


class LeaseProgress:
    """What the heartbeat publishes about the write a lease protects (the status
    board's entry). The ingest core updates it in place; the heartbeat thread reads it
    (single assignments, no lock). Not the job interface's ``Progress``."""

    def __init__(self) -> None:
        self.publish = False
        self.job_id = ""
        self.source = ""
        self.offset = 0
        self.total = 0
        self.expected = ""
        self.rate = 0.0
        #: Set before the first heartbeat that may publish the status (the release then
        #: takes the entry off the board).
        self.published = False
        #: Called once, on the heartbeat thread, after the first beat that published
        #: this status (the write has lasted a heartbeat); then cleared.
        self.on_beat: Callable[[], None] | None = None

    def fields(self, ref: str, holder: Holder) -> list[str]:
        """The status hash fields, as a flat field/value list."""
        return [
            "ref", ref,
            "offset", str(self.offset),
            "total", str(self.total),
            "expected", self.expected,
            "job_id", self.job_id,
            "source", self.source,
            "rate", f"{self.rate:.1f}",
            "holder", holder.id,
            "host", holder.host,
            "pid", str(holder.pid),
            "fence", str(holder.fence),
        ]  # fmt: skip


class RedisLease:
    """A held Redis lease (the :class:`store.locks.Lease` protocol). Created by
    :meth:`RedisLeaseLocker.try_lock`."""

    def __init__(
        self, locker: RedisLeaseLocker, ref: str, token: str, holder: Holder, sent_at: float
    ) -> None:
        self.ref = ref
        self.token = token
        self.keys = keys.ref_keys(ref)
        self.progress = LeaseProgress()
        self._locker = locker
        self._holder = holder
        self._renewed_at = sent_at
        self._lost = threading.Event()
        self._released = False

    @property
    def holder(self) -> Holder:
        return self._holder

    @property
    def fence(self) -> int:
        """The fencing number this lease was granted (strictly greater than any before)."""
        return self._holder.fence

    @property
    def lost(self) -> bool:
        """True once the lease is known lost (see the module docstring)."""
        if not self._lost.is_set() and self._expired():
            self._mark_lost("no renewal within the lease time")
        return self._lost.is_set()

    def _expired(self) -> bool:
        return time.monotonic() - self._renewed_at > self._locker.ttl - self._locker.margin

    def _mark_lost(self, why: str) -> None:
        if not self._lost.is_set():
            log.warning("lease on %s (fence %d) lost: %s", self.ref, self.fence, why)
            self._lost.set()

    def check(self) -> None:
        if self._released:
            raise errdefs.FailedPrecondition(f"lease on ref {self.ref} already released")
        if self.lost:
            raise errdefs.FailedPrecondition(
                f"lease on ref {self.ref} lost (fence {self.fence})",
                {"reason": "lease-lost", "ref": self.ref},
            )

    def _renewed(self, sent_at: float, server_ms: int) -> None:
        self._renewed_at = sent_at
        h = self._holder
        self._holder = Holder(
            h.id, h.host, h.pid, h.acquired_at, ms_to_datetime(server_ms), h.fence
        )

    def release(self) -> None:
        """Stop renewing, then compare-and-delete. Never raises: a lease that cannot be
        released (Redis down) expires by itself within the TTL."""
        if self._released:
            return
        self._released = True
        self._locker._forget(self)
        if self._lost.is_set():
            return
        k = self.keys
        pending = PendingRelease(
            self._locker, self.ref, (k.lease, k.holder, k.status, keys.ACTIVE),
            (self.token, k.member, "1" if self.progress.published else "0"),
        )  # fmt: skip
        if not _defer(pending):
            pending.run()


@dataclass(frozen=True)
class PendingRelease:
    """A lease's compare-and-delete (``release.lua``'s keys and arguments) put off by
    :func:`defer_releases`, to run inside the script that stores the task's result."""

    locker: RedisLeaseLocker
    ref: str
    keys: tuple[str, str, str, str]
    args: tuple[str, str, str]

    def run(self) -> None:
        """Release now, in a round trip of its own. Never raises (see
        :meth:`RedisLease.release`)."""
        try:
            self.locker.scripts().release(keys=list(self.keys), args=list(self.args))
        except redis.RedisError as e:
            log.warning("could not release lease on %s (expires by itself): %s", self.ref, e)


_deferral = threading.local()


def _pending() -> list[PendingRelease]:
    """This thread's put-off releases (made empty on first use)."""
    if not hasattr(_deferral, "pending"):
        _deferral.pending = []
    pending: list[PendingRelease] = _deferral.pending
    return pending


def defer_releases() -> None:
    """From now until :func:`flush_releases`, lease releases made by this thread are put
    off (:func:`take_releases`), so the task's result store can run them in its own
    round trip: the lease goes with the result written (``store_result.lua``). A lock
    taken again on a ref whose release is pending runs that release first."""
    _pending()
    _deferral.on = True


def take_releases() -> list[PendingRelease]:
    """The releases this thread has put off so far (they are the caller's to run)."""
    pending = _pending()
    _deferral.pending = []
    return pending


def give_back(pending: list[PendingRelease]) -> None:
    """Put releases taken by :func:`take_releases` back (their script failed), for
    :func:`flush_releases`."""
    _deferral.pending = [*pending, *_pending()]


def flush_releases() -> None:
    """Stop putting releases off in this thread and run those still pending."""
    _deferral.on = False
    for pending in take_releases():
        pending.run()


def _defer(pending: PendingRelease) -> bool:
    if not getattr(_deferral, "on", False):
        return False
    _pending().append(pending)
    return True


def _run_pending(ref: str) -> None:
    """Run this thread's put-off release of ``ref``, if any (before locking it again)."""
    pending = _pending()
    for p in [p for p in pending if p.ref == ref]:
        pending.remove(p)
        p.run()


class AcquireGuard:
    """A condition every acquire of one thread checks in the same script while the
    guard is active (:meth:`RedisLeaseLocker.guarded`): when field ``field`` of the hash
    ``key`` exists (a job's cancel flag), the acquire takes nothing and raises
    ``refuse()``; when it does not, ``on_read`` (if any) is told the field was just
    read. :attr:`checked` tells whether an acquire has read it."""

    def __init__(
        self,
        key: str,
        field: str,
        refuse: Callable[[], Exception],
        on_read: Callable[[], None] | None = None,
    ) -> None:
        self.key = key
        self.field = field
        self.refuse = refuse
        self.on_read = on_read
        self.checked = False


@dataclass(frozen=True)
class _Scripts:
    acquire: Script
    heartbeat: Script
    release: Script


class RedisLeaseLocker:
    """Cross-host ref locks on one Redis primary (the :class:`store.locks.RefLocker`
    protocol). Safe to create before a fork: clients and the heartbeat thread are made
    lazily in the process that uses them.

    Args:
        url: the Redis URL (``redis://``, ``rediss://``, passwords in the URL, or a
            socket, ``unix:///PATH.sock?db=N``).
        ttl: the lease time-to-live in seconds.
        interval: seconds between heartbeats (default ttl/3, at most 1 s).
    """

    def __init__(self, url: str, ttl: float = 30.0, interval: float | None = None) -> None:
        if ttl <= 0.3:
            raise errdefs.InvalidArgument(f"lease ttl {ttl} s is too short")
        self.url = url
        self.ttl = ttl
        self.interval = interval if interval is not None else min(ttl / 3.0, 1.0)
        self.margin = min(ttl / 5.0, 2.0)
        self.fence_ttl_ms = int(max(FENCE_TTL, 100 * ttl) * 1000)
        self._pid = -1
        self._mutex = threading.Lock()
        self._leases: dict[str, RedisLease] = {}
        self._wake = threading.Event()
        self._client: redis.Redis | None = None
        self._hb_client: redis.Redis | None = None
        self._thread: threading.Thread | None = None
        self._texts = {name: load(name) for name in ("acquire", "heartbeat", "release")}
        self._acquire_script: Script | None = None
        self._heartbeat_script: Script | None = None
        self._release_script: Script | None = None
        #: This process's host name, pid, start time and node, read once per process.
        self._identity: tuple[str, int, str, str] = ("", -1, "", "")
        self._local = threading.local()

    @property
    def domains(self) -> frozenset[str]:
        """The Redis server and database its leases live in, as every client of them
        names it, however it reaches the server (its socket on one host, TCP on
        another, ``localhost`` or ``127.0.0.1``): ``redis-db:<db id>/<run id>/<db>``. The
        database's id is a random one stored in it once (key
        :data:`~ingestq.tasks.keys.DATABASE_ID`); the server's ``run_id`` (``INFO
        server``) tells apart a copy of those data on another server or a replica,
        whose locks do not exclude these; ``<db>`` the database's index (a copy in
        another database of the same server). Where ``INFO`` is refused, a domain of
        this locker alone (no gc shares it; logged). Reads Redis: Unavailable when it
        cannot be reached or refuses the id."""
        self._ensure_process()
        assert self._client is not None
        db = self._client.connection_pool.connection_kwargs.get("db", 0)
        try:
            db_id, info = self._database_ids(self._client, create=False)
            if db_id is None:  # the first locker of this database
                db_id, info = self._database_ids(self._client, create=True)
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"lease service: the database id: {e}") from e
        if isinstance(db_id, Exception) or db_id is None:
            raise errdefs.Unavailable(f"lease service: the database id: {db_id or 'not kept'}")
        run_id = info.get("run_id") if isinstance(info, dict) else None
        if not run_id:  # INFO renamed or denied (ACL: it is in @dangerous)
            log.warning(
                "lease service %s: INFO is refused, so this worker's locks name a domain of "
                "their own and an S3 gc refuses while its pulls run: allow +info",
                self.url_domain,
            )
            return own_domain(self)
        name = db_id.decode() if isinstance(db_id, bytes) else str(db_id)
        return frozenset({f"redis-db:{name}/{run_id}/{db}"})

    @staticmethod
    def _database_ids(client: redis.Redis, *, create: bool) -> tuple[Any, Any]:
        """The database id (after storing a new one unless one is there, with
        ``create``) and ``INFO server``, in one pipeline: one connection, so both come
        from one server. A refused command is its exception in place."""
        with client.pipeline(transaction=False) as pipe:
            if create:
                pipe.set(keys.DATABASE_ID, secrets.token_hex(16), nx=True)
            pipe.get(keys.DATABASE_ID)
            pipe.info("server")
            *_, db_id, info = pipe.execute(raise_on_error=False)
        return db_id, info

    @property
    def url_domain(self) -> str:
        """The Redis its leases live in as its URL names it, without credentials
        (``redis://host:port/db``; a socket ``unix://HOST/PATH.sock/db``, named with
        this host's name), for messages; two names may be one server and one name
        two servers, so :attr:`domains` names it by its ids instead."""
        parts = urlsplit(self.url)
        if is_socket_url(self.url):
            sock = SocketURL.parse(self.url)
            return f"unix://{socket.gethostname()}{sock.decoded_path}/{sock.db}"
        db = parts.path.strip("/") or "0"
        return f"redis://{parts.hostname or 'localhost'}:{parts.port or 6379}/{db}"

    # process-local state ----------------------------------------------------------------

    def _ensure_process(self) -> None:
        if self._pid == os.getpid():
            return
        with self._mutex:
            if self._pid == os.getpid():
                return
            self._leases = {}
            self._client = redis_client(self.url, socket_timeout=min(5.0, self.ttl / 3.0))
            self._hb_client = redis_client(self.url, socket_timeout=self.ttl / 6.0)
            self._acquire_script = self._client.register_script(self._texts["acquire"])
            self._heartbeat_script = self._hb_client.register_script(self._texts["heartbeat"])
            self._release_script = self._client.register_script(self._texts["release"])
            self._thread = None
            pid = os.getpid()
            self._identity = (socket.gethostname(), pid, process_start(pid) or "", node_id())
            self._pid = pid

    def client(self) -> redis.Redis:
        """This process's client for acquire, release and reads."""
        self._ensure_process()
        assert self._client is not None
        return self._client

    def scripts(self) -> _Scripts:
        """This process's registered scripts."""
        self._ensure_process()
        assert self._acquire_script and self._heartbeat_script and self._release_script
        return _Scripts(self._acquire_script, self._heartbeat_script, self._release_script)

    @contextmanager
    def guarded(
        self,
        key: str,
        field: str,
        refuse: Callable[[], Exception],
        on_read: Callable[[], None] | None = None,
    ) -> Iterator[AcquireGuard]:
        """Within the block, every :meth:`try_lock` of this thread also reads field
        ``field`` of hash ``key`` in the same script and, when it exists, takes nothing
        and raises ``refuse()``, else calls ``on_read`` (the worker passes the job's
        cancel flag, so a job reads it and takes its ref's lease in one round trip).
        Yields the guard, whose ``checked`` tells afterwards whether an acquire read it."""
        guard = AcquireGuard(key, field, refuse, on_read)
        previous = getattr(self._local, "guard", None)
        self._local.guard = guard
        try:
            yield guard
        finally:
            self._local.guard = previous

    def _acquire(
        self, k: keys.RefKeys, args: list[str | int], guard: AcquireGuard | None
    ) -> list[Any]:
        """acquire.lua with ``args`` (ARGV[1..10]) and the active guard, if any; raises
        the guard's error when its field is set. Raises redis.RedisError."""
        if guard is None:
            return list(self.scripts().acquire(
                keys=[k.lease, k.fence, k.holder], args=args, client=self.client()
            ))  # fmt: skip
        reply = self.scripts().acquire(
            keys=[k.lease, k.fence, k.holder, guard.key], args=[*args, guard.field],
            client=self.client(),
        )  # fmt: skip
        guard.checked = True
        if int(reply[0]) == 2:
            raise guard.refuse()
        if guard.on_read is not None:
            guard.on_read()
        return list(reply)

    # RefLocker ------------------------------------------------------------------------
    def try_lock(self, ref: str, holder_id: str) -> RedisLease:
        """Take ``ref``'s lease or raise Unavailable ("ref <ref> locked for ...").
        A lease held by a process of this node that is gone (see
        :func:`holder_process_gone`) is taken over at once with a new fence
        (``acquire.lua`` again, with a compare-and-set on its token). Unavailable too when Redis
        cannot be reached; the guard's error inside :meth:`guarded` when its field is set."""
        self._ensure_process()
        _run_pending(ref)
        host, pid, started, node = self._identity
        guard: AcquireGuard | None = getattr(self._local, "guard", None)
        k = keys.ref_keys(ref)
        token = secrets.token_hex(16)
        sent_at = time.monotonic()
        mine: list[str | int] = [token, int(self.ttl * 1000), holder_id, host, pid, ref,
                                 self.fence_ttl_ms, started, node]  # fmt: skip
        try:
            reply = self._acquire(k, [*mine, ""], guard)
            if int(reply[0]) != 1:
                reply = self._take_over(ref, k, reply, mine, guard)
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"lease service for ref {ref}: {e}") from e
        fence, now_ms = int(reply[1]), int(reply[2])
        now = ms_to_datetime(now_ms)
        holder = Holder(holder_id, host, pid, now, now, fence)
        lease = RedisLease(self, ref, token, holder, sent_at)
        with self._mutex:
            self._leases[ref] = lease
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._heartbeat_loop, name="ingestq-lease-heartbeat", daemon=True
                )
                self._thread.start()
        return lease

    def _take_over(
        self,
        ref: str,
        k: keys.RefKeys,
        held: list[Any],
        mine: list[str | int],
        guard: AcquireGuard | None,
    ) -> list[Any]:
        """The grant of ``ref``'s lease taken over from its holder when that is a
        process of this node that is gone (a killed pool process: its lease would
        otherwise stall the redelivered job for up to a ttl); else the locked error.
        ``held`` is acquire.lua's reply, ``mine`` this caller's acquire arguments."""
        acquired, _host, pid, started, token, node = (
            v.decode() if isinstance(v, bytes) else v for v in held[2:8]
        )
        since = ms_to_datetime(acquired) if acquired else None
        try:
            dead_pid = int(pid or 0)
        except ValueError:
            dead_pid = 0
        if token and holder_process_gone(node or "", dead_pid, started or ""):
            reply = self._acquire(k, [*mine, token], guard)
            if int(reply[0]) == 1:
                log.warning("took over the lease on %s from process %d, gone", ref, dead_pid)
                return list(reply)
        raise locked_error(ref, since)

    def holder(self, ref: str) -> Holder | None:
        """Who holds ``ref`` (with the server time of its last heartbeat), or None.
        Unavailable when Redis cannot be reached."""
        k = keys.ref_keys(ref)
        try:
            raw = self.client().hgetall(k.holder)
        except redis.RedisError as e:
            raise errdefs.Unavailable(f"lease service for ref {ref}: {e}") from e
        return holder_from_hash(raw)

    def held(self, ref: str) -> RedisLease | None:
        """The lease this process holds on ``ref``, if any."""
        self._ensure_process()
        with self._mutex:
            return self._leases.get(ref)

    def _forget(self, lease: RedisLease) -> None:
        with self._mutex:
            if self._leases.get(lease.ref) is lease:
                del self._leases[lease.ref]

    # heartbeat ------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        me = os.getpid()
        while self._pid == me:
            with self._mutex:
                leases = list(self._leases.values())
                client = self._hb_client
            if not leases:
                self._wake.wait(self.interval)
                self._wake.clear()
                continue
            started = time.monotonic()
            for lease in leases:
                if not lease._released and not lease._lost.is_set() and client is not None:
                    try:
                        self._beat(lease, client)
                    except Exception:  # keep beating the others; this one expires safely
                        log.exception("heartbeat for %s failed", lease.ref)
            spent = time.monotonic() - started
            self._wake.wait(max(self.interval - spent, 0.0))
            self._wake.clear()

    def _beat(self, lease: RedisLease, client: redis.Redis) -> None:
        k = lease.keys
        p = lease.progress
        sent_at = time.monotonic()
        status_ttl = int(max(3 * self.interval, 2.0) * 1000)
        if p.publish:
            p.published = True
        try:
            reply = self.scripts().heartbeat(
                keys=[k.lease, k.holder, k.status, keys.ACTIVE],
                args=[lease.token, int(self.ttl * 1000), status_ttl, "1" if p.publish else "0",
                      k.member, *p.fields(lease.ref, lease.holder)],
                client=client,
            )  # fmt: skip
        except redis.RedisError as e:
            log.info("heartbeat for %s failed: %s", lease.ref, e)
            lease.lost  # noqa: B018 - evaluates expiry by the monotonic clock
            return
        if int(reply) == 0:
            if not lease._released:  # released meanwhile: its key is gone, nothing is lost
                lease._mark_lost("the lease key holds another token")
            return
        lease._renewed(sent_at, int(reply))
        callback = p.on_beat if p.publish else None
        if callback is not None:
            p.on_beat = None
            callback()


def holder_from_hash(raw: Mapping[Any, Any]) -> Holder | None:
    """A Holder from the lease's holder hash, or None when it is absent or unreadable."""
    d = decode_hash(raw)
    try:
        hid, host, pid = d.get("id"), d.get("host"), d.get("pid")
        acquired, beat = d.get("acquired_at"), d.get("heartbeat_at")
        if not (hid and host and pid and acquired and beat):
            return None
        return Holder(
            id=hid,
            host=host,
            pid=int(pid),
            acquired_at=ms_to_datetime(acquired),
            heartbeat_at=ms_to_datetime(beat),
            fence=int(d.get("fence") or 0),
        )
    except ValueError:
        return None


LockerFactory = Callable[[], RedisLeaseLocker]
