"""Configuration of both job backends (:class:`Settings`), read once from the
environment, and the store it opens. Parses the environment; connects to nothing
(Redis clients are made in :mod:`ingestq.tasks.redisconn`). Imports errdefs, store and
the retry policy of this package.

Every knob has a deliberate default; the environment variables are:

=================================  =====================================================
``INGESTQ_REDIS_URL``              one Redis for broker, results, leases and status
``INGESTQ_BROKER_URL``             override: the Celery broker (``redis://``, ``rediss://``
                                   or a socket, ``unix:///PATH.sock?db=N``, as every URL)
``INGESTQ_RESULT_URL``             override: the Celery result backend
``INGESTQ_LOCK_URL``               override: leases, the status board and job records
``INGESTQ_ROOT``                   the store root (default: the user's data directory)
``INGESTQ_STORE``                  ``s3://BUCKET/PREFIX``: keep the content in S3 (the AWS
                                   environment configures the client; needs ``ingestq[s3]``);
                                   the root then holds only host-local files
``INGESTQ_FILE_ROOTS``             ``os.pathsep``-separated roots file sources may read
``INGESTQ_LOCK_DIR``               host-local lock directory (default ``<root>/locks``); set
                                   it to a local disk when the root is a shared filesystem
                                   (flock is unreliable over NFS; Redis leases cover hosts)
``INGESTQ_VISIBILITY_TIMEOUT``     broker visibility timeout, s (default 43200 = 12 h)
``INGESTQ_LEASE_TTL``              Redis lease time-to-live, s (default 30)
``INGESTQ_RESULT_EXPIRES``         how long job results live, s (default 604800 = 7 d)
``INGESTQ_HTTP_CONNECT_TIMEOUT``   HTTP connect timeout, s (default 10)
``INGESTQ_HTTP_READ_TIMEOUT``      HTTP read (stall) timeout, s (default 60)
``INGESTQ_HTTP_MAX_REDIRECTS``     redirects followed (default 10)
``INGESTQ_LOW_SPEED_LIMIT``        curl's low-speed rule for HTTP and registry bodies:
                                   slower than this many bytes/s (default 1024) ...
``INGESTQ_LOW_SPEED_TIME``         ... over this many seconds (default 60) is Unavailable
                                   (retried, resuming); 0 in either disables the rule
``INGESTQ_MAX_SOURCE_RETRIES``     retries of a job whose source is Unavailable (default 8)
``INGESTQ_MAX_REDELIVERIES``       redeliveries after lost workers before a job fails with
                                   Aborted (default 10; bounds reject_on_worker_lost loops)
``INGESTQ_RETRY_CAP``              cap of a retry countdown, s (default 300)
``INGESTQ_LOCK_WAIT_CAP``          cap of the locked-ref backoff, s (default 5)
``INGESTQ_RESTORE_INTERVAL``       kombu ``unacked_restore_interval``, s (default 10)
``INGESTQ_SWEEP_INTERVAL``         the orphan sweeper's period, s (default 20; 0: off)
``INGESTQ_BATCH_JOBS``             small local-file jobs of one ``enqueue_many`` per message
                                   (default and most 64; 0 or 1: a message per job)
``INGESTQ_COALESCE_WINDOW``        workers: how long the first of several small local-file
                                   jobs that came as messages of their own waits for more
                                   to run with it in one batch, s (default 0.005; 0: off)
``INGESTQ_FSYNC``                  ``0`` disables fsync in the store (tests/benchmarks only)
``INGESTQ_METRICS_PORT``           worker Prometheus exporter port (unset: no exporter)
``INGESTQ_GC_INTERVAL``            workers run gc this often (``1h``, ``30m``, seconds;
                                   default 0: never, run ``ingestq gc`` yourself)
``INGESTQ_GC_INGEST_MAX_AGE``      idle age after which gc removes a partial ingest
                                   (default ``24h``)
``INGESTQ_GC_JOB_RETENTION``       age after which gc removes a finished job's record
                                   (default ``7d``)
``INGESTQ_GC_GRACE``               opt-in: gc keeps blobs committed less than this long
                                   ago (default 0: marks alone protect content)
``INGESTQ_GC_QUARANTINE_MAX_AGE``  how long gc keeps a damaged blob moved to
                                   ``quarantine/`` (default ``7d``)
``INGESTQ_MAX_BYTES``              cap of the bytes the store's blobs, ingests and
                                   quarantined files hold
                                   (``10G``, ``512M``, ``1.5T``; unset: no cap)
``INGESTQ_MIN_FREE``               free space kept on the store's filesystem (same units)
``INGESTQ_GC_ON_PRESSURE``         ``1``: collect garbage once before refusing for space
=================================  =====================================================

With no Redis URL at all the queue is *embedded*: jobs run in the calling process and
coordinate with other processes on the host through the store's file locks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from ingestq import errdefs
from ingestq.fetch.options import FetchOptions
from ingestq.jobs.retry import RetryPolicy
from ingestq.store.budget import Budget
from ingestq.store.expiry import parse_duration

if TYPE_CHECKING:
    # The store modules load when a store is opened (a producer that queues jobs needs
    # none of them); the S3 package only for an s3:// store.
    from ingestq.s3 import S3Store
    from ingestq.store.gc import GcOptions
    from ingestq.store.local import LocalStore
    from ingestq.store.locks import RefLocker


def default_root(env: Mapping[str, str] | None = None) -> Path:
    """``$INGESTQ_ROOT``, else ``$XDG_DATA_HOME/ingestq``, else ``~/.local/share/ingestq``."""
    env = os.environ if env is None else env
    explicit = env.get("INGESTQ_ROOT")
    if explicit:
        return Path(explicit)
    data = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "ingestq"


def _float(env: Mapping[str, str], name: str, default: float, allow_zero: bool = False) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise errdefs.InvalidArgument(f"{name}={raw!r} is not a number") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise errdefs.InvalidArgument(f"{name}={raw!r} is out of range")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A duration (``30s``, ``10m``, ``7d`` or seconds); InvalidArgument when malformed."""
    text = env.get(name)
    if not text:
        return default
    try:
        return parse_duration(text).total_seconds()
    except errdefs.InvalidArgument as e:
        raise errdefs.InvalidArgument(f"{name}: {e}") from None


def _int(env: Mapping[str, str], name: str, default: int, allow_zero: bool = False) -> int:
    return int(_float(env, name, default, allow_zero))


#: The most queued jobs one message may carry (``INGESTQ_BATCH_JOBS``' ceiling and
#: default: :mod:`ingestq.tasks.batching`).
MAX_BATCH_JOBS = 64


def _batch_jobs(env: Mapping[str, str]) -> int:
    """``INGESTQ_BATCH_JOBS``: 0 to :data:`MAX_BATCH_JOBS` (0 or 1: every job in a
    message of its own); InvalidArgument otherwise."""
    value = _int(env, "INGESTQ_BATCH_JOBS", MAX_BATCH_JOBS, allow_zero=True)
    if value > MAX_BATCH_JOBS:
        raise errdefs.InvalidArgument(
            f"INGESTQ_BATCH_JOBS={value} is out of range (at most {MAX_BATCH_JOBS})"
        )
    return value


#: The longest ``INGESTQ_COALESCE_WINDOW``, seconds: a job waits no longer for others.
MAX_COALESCE_WINDOW = 1.0


def _coalesce_window(env: Mapping[str, str]) -> float:
    """``INGESTQ_COALESCE_WINDOW``: 0 (off) to :data:`MAX_COALESCE_WINDOW` seconds;
    InvalidArgument otherwise."""
    value = _float(env, "INGESTQ_COALESCE_WINDOW", 0.005, allow_zero=True)
    if not value <= MAX_COALESCE_WINDOW:
        raise errdefs.InvalidArgument(
            f"INGESTQ_COALESCE_WINDOW={value} is out of range (at most {MAX_COALESCE_WINDOW} s)"
        )
    return value


#: The URL schemes of a Redis: TCP, TLS, a unix socket (:class:`SocketURL`).
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_socket_url(url: str | None) -> bool:
    """Whether ``url`` names a Redis by its unix socket (``unix://``)."""
    return url is not None and url.startswith("unix://")


def hide_password(url: str | None) -> str | None:
    """``url`` with its password (if any) replaced by ``***``, to be shown (logs,
    messages, ``ingestq info``); the rest, query included, as it is."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]  # as written: [::1]:6379 stays bracketed
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclass(frozen=True)
class SocketURL:
    """A Redis socket URL, ``unix://[:PASSWORD@]/PATH.sock[?db=N]``, taken apart: the
    part before the path as written (credentials), the socket's path as written
    (percent-encoded) and decoded, and the database number."""

    netloc: str
    path: str
    decoded_path: str
    db: int

    @classmethod
    def parse(cls, url: str) -> SocketURL:
        """InvalidArgument unless ``url`` is a ``unix://`` URL with a path and at most
        the query ``db=N``."""
        parts = urlsplit(url)
        query = parse_qs(parts.query, keep_blank_values=True)
        dbs = query.get("db", ["0"])
        if (parts.scheme != "unix" or not parts.path or parts.hostname
                or set(query) - {"db"} or len(dbs) != 1):  # fmt: skip
            raise errdefs.InvalidArgument(
                f"a Redis socket URL is unix:///PATH.sock with at most ?db=N, got {url!r}"
            )
        if not (dbs[0].isascii() and dbs[0].isdigit()):
            raise errdefs.InvalidArgument(f"a Redis socket URL's db must be a number: {dbs[0]!r}")
        return cls(parts.netloc, parts.path, unquote(parts.path), int(dbs[0]))


@dataclass(frozen=True)
class Settings:
    """Everything both job backends are configured with. Build it with :meth:`from_env`."""

    broker_url: str | None = None
    result_url: str | None = None
    lock_url: str | None = None
    root: Path = field(default_factory=default_root)
    file_roots: tuple[Path, ...] | None = None
    lock_dir: Path | None = None
    visibility_timeout: float = 43200.0
    lease_ttl: float = 30.0
    result_expires: int = 7 * 24 * 3600
    http_connect_timeout: float = 10.0
    http_read_timeout: float = 60.0
    http_max_redirects: int = 10
    low_speed_limit: int = 1024
    low_speed_time: float = 60.0
    max_source_retries: int = 8
    max_redeliveries: int = 10
    batch_jobs: int = MAX_BATCH_JOBS
    coalesce_window: float = 0.005
    retry_cap: float = 300.0
    lock_wait_cap: float = 5.0
    restore_interval: float = 10.0
    sweep_interval: float = 20.0
    fsync: bool = True
    metrics_port: int | None = None
    gc_interval: float = 0.0
    gc_ingest_max_age: float = 24 * 3600.0
    gc_quarantine_max_age: float = 7 * 24 * 3600.0
    gc_job_retention: float = 7 * 24 * 3600.0
    gc_grace: float = 0.0
    budget: Budget = field(default_factory=Budget)
    gc_on_pressure: bool = False
    store_url: str | None = None

    def gc_options(self, *, dry_run: bool = False) -> GcOptions:
        """The gc options these settings give (``INGESTQ_GC_*``)."""
        from ingestq.store.gc import GcOptions

        return GcOptions(
            dry_run=dry_run,
            ingest_max_age=timedelta(seconds=self.gc_ingest_max_age),
            grace=timedelta(seconds=self.gc_grace),
            quarantine_max_age=timedelta(seconds=self.gc_quarantine_max_age),
        )

    @property
    def queued(self) -> bool:
        """True when a broker is configured (jobs go to workers), False when embedded."""
        return self.broker_url is not None

    @property
    def heartbeat_interval(self) -> float:
        """How often a held lease is renewed and its status published: a third of the TTL,
        at most one second (status freshness)."""
        return min(self.lease_ttl / 3.0, 1.0)

    def fetch_options(self) -> FetchOptions:
        """What sources need of these settings. File roots: ``INGESTQ_FILE_ROOTS``; when
        unset, anything in the embedded default (the caller's own process) and nothing
        on a queue worker."""
        roots = self.file_roots
        if roots is None and self.queued:
            roots = ()
        return FetchOptions(
            file_roots=roots,
            http_connect_timeout=self.http_connect_timeout,
            http_read_timeout=self.http_read_timeout,
            http_max_redirects=self.http_max_redirects,
            http_low_speed_limit=self.low_speed_limit,
            http_low_speed_time=self.low_speed_time,
        )

    @property
    def source_retry(self) -> RetryPolicy:
        """How a job whose source (or lease) is Unavailable is retried: backoff from
        1 s doubling to ``retry_cap``, at least the server's Retry-After, at most
        ``max_source_retries`` retries."""
        return RetryPolicy(first=1.0, cap=self.retry_cap, max_attempts=self.max_source_retries + 1)

    @property
    def lock_wait_retry(self) -> RetryPolicy:
        """How a queued job whose ref is locked by another writer waits: backoff from
        0.1 s doubling to ``lock_wait_cap``, unbounded in number."""
        return RetryPolicy(first=0.1, cap=self.lock_wait_cap, max_attempts=None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (default ``os.environ``).

        Raises InvalidArgument for a malformed number or size or a Redis URL of another
        scheme than ``redis://``, ``rediss://`` or ``unix://`` (a Redis socket,
        ``unix:///run/redis/redis.sock?db=0``).
        """
        env = os.environ if env is None else env
        common = env.get("INGESTQ_REDIS_URL") or None
        broker = env.get("INGESTQ_BROKER_URL") or common
        result = env.get("INGESTQ_RESULT_URL") or common or broker
        lock = env.get("INGESTQ_LOCK_URL") or common or result
        for name, url in (("broker", broker), ("result", result), ("lock", lock)):
            if url is not None and not url.startswith(REDIS_SCHEMES):
                raise errdefs.InvalidArgument(
                    f"{name} URL must be redis://, rediss:// or unix://, got {url.split(':')[0]}:"
                )
            if is_socket_url(url):
                SocketURL.parse(str(url))
        if (result or lock) and broker is None:
            raise errdefs.InvalidArgument(
                "INGESTQ_RESULT_URL/INGESTQ_LOCK_URL need a broker: set INGESTQ_BROKER_URL "
                "or INGESTQ_REDIS_URL"
            )
        roots_text = env.get("INGESTQ_FILE_ROOTS")
        roots = (
            tuple(Path(p) for p in roots_text.split(os.pathsep) if p)
            if roots_text is not None
            else None
        )
        metrics = env.get("INGESTQ_METRICS_PORT")
        return cls(
            broker_url=broker,
            result_url=result,
            lock_url=lock,
            root=default_root(env),
            file_roots=roots,
            lock_dir=Path(env["INGESTQ_LOCK_DIR"]) if env.get("INGESTQ_LOCK_DIR") else None,
            visibility_timeout=_float(env, "INGESTQ_VISIBILITY_TIMEOUT", 43200.0),
            lease_ttl=_float(env, "INGESTQ_LEASE_TTL", 30.0),
            result_expires=_int(env, "INGESTQ_RESULT_EXPIRES", 7 * 24 * 3600),
            http_connect_timeout=_float(env, "INGESTQ_HTTP_CONNECT_TIMEOUT", 10.0),
            http_read_timeout=_float(env, "INGESTQ_HTTP_READ_TIMEOUT", 60.0),
            http_max_redirects=_int(env, "INGESTQ_HTTP_MAX_REDIRECTS", 10),
            low_speed_limit=_int(env, "INGESTQ_LOW_SPEED_LIMIT", 1024, allow_zero=True),
            low_speed_time=_float(env, "INGESTQ_LOW_SPEED_TIME", 60.0, allow_zero=True),
            max_source_retries=_int(env, "INGESTQ_MAX_SOURCE_RETRIES", 8, allow_zero=True),
            max_redeliveries=_int(env, "INGESTQ_MAX_REDELIVERIES", 10),
            batch_jobs=_batch_jobs(env),
            coalesce_window=_coalesce_window(env),
            retry_cap=_float(env, "INGESTQ_RETRY_CAP", 300.0),
            lock_wait_cap=_float(env, "INGESTQ_LOCK_WAIT_CAP", 5.0),
            restore_interval=_float(env, "INGESTQ_RESTORE_INTERVAL", 10.0),
            sweep_interval=_float(env, "INGESTQ_SWEEP_INTERVAL", 20.0, allow_zero=True),
            fsync=env.get("INGESTQ_FSYNC", "1") not in ("0", "false", "no"),
            metrics_port=int(metrics) if metrics else None,
            gc_interval=_seconds(env, "INGESTQ_GC_INTERVAL", 0.0),
            gc_ingest_max_age=_seconds(env, "INGESTQ_GC_INGEST_MAX_AGE", 24 * 3600.0),
            gc_job_retention=_seconds(env, "INGESTQ_GC_JOB_RETENTION", 7 * 24 * 3600.0),
            gc_quarantine_max_age=_seconds(env, "INGESTQ_GC_QUARANTINE_MAX_AGE", 7 * 24 * 3600.0),
            gc_grace=_seconds(env, "INGESTQ_GC_GRACE", 0.0),
            budget=Budget.parse(env.get("INGESTQ_MAX_BYTES"), env.get("INGESTQ_MIN_FREE")),
            gc_on_pressure=env.get("INGESTQ_GC_ON_PRESSURE", "0") not in ("", "0", "false", "no"),
            store_url=env.get("INGESTQ_STORE") or None,
        )


def open_store(settings: Settings, lockers: Sequence[RefLocker] = ()) -> LocalStore | S3Store:
    """The store at ``settings.store_url`` (``s3://...``) or else at ``settings.root``,
    with the host lock in ``settings.lock_dir`` (when set, else under the root) followed
    by ``lockers``, and ``settings.budget``; with
    ``gc_on_pressure``, a write that would break the budget first runs one gc
    (:func:`ingestq.store.gc.collect`, on ``s3://`` :func:`ingestq.s3.gc.collect`).
    InvalidArgument for another URL scheme, FailedPrecondition for ``s3://`` without
    boto3, Unimplemented for a free-space reserve on ``s3://``."""
    from ingestq.store.gc import collect
    from ingestq.store.local import LocalStore
    from ingestq.store.locks import ChainLocker, FileRefLocker

    if settings.store_url is not None:
        from ingestq.s3 import open_s3_store

        host = FileRefLocker(settings.lock_dir or settings.root / "locks")
        s3 = open_s3_store(
            settings.store_url,
            settings.root,
            ChainLocker([host, *lockers]),
            budget=settings.budget,
        )
        if settings.gc_on_pressure:
            from ingestq.s3.gc import collect as collect_s3

            s3_options = settings.gc_options()

            def relieve() -> None:
                # Another run holds the bucket's gc lock (it is freeing space already),
                # or jobs on other hosts lock where this one cannot: the budget decides.
                with contextlib.suppress(errdefs.Unavailable, errdefs.FailedPrecondition):
                    collect_s3(s3, s3_options)

            s3.on_pressure = relieve
        return s3
    store = LocalStore(settings.root, lockers=lockers, fsync=settings.fsync, budget=settings.budget)
    if settings.gc_on_pressure:
        options = settings.gc_options()
        store.meter.on_pressure = lambda: collect(store, options)
    if settings.lock_dir is not None:
        store.file_locker = FileRefLocker(settings.lock_dir)
        store.locker = ChainLocker([store.file_locker, *lockers])
    return store
