"""Every Redis key name ingestq uses: the lease, the status board, the job records, the
idempotency keys, and Celery's result keys (which ingestq reads itself).

A ref can be any string up to 4 KiB, so keys use ``sha256(ref)`` (the same name the
store gives the ingest directory). Per-ref keys share a ``{hash}`` tag so the scripts
touching them stay in one Redis Cluster slot; the active index is global.

Every key here other than Celery's (whose result keys expire by ``result_expires``)
expires or is deleted when done: the lease, holder and status hash by their TTLs
(renewed by the heartbeat) and by release; the active index with its newest entry's
status TTL; the fence key :data:`ingestq.tasks.lease.FENCE_TTL` after the ref's last
grant; job records, their index and idempotency keys by ``result_expires`` (the
index's members older than that are trimmed at each create). One key stays:
:data:`DATABASE_ID`, a few bytes.

Imports store (the ref hash) only.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingestq.store.locks import ref_key

PREFIX = "ingestq"
ACTIVE = f"{PREFIX}:active"
#: The index of job records (a zset of job ids scored by creation time), for listing.
JOBS = f"{PREFIX}:jobs"
#: This Redis database's own id (32 random hex digits, set once with SET NX by the first
#: lease locker that names its lock domains): the name that every client of the database
#: shares, however it reaches the server (socket or TCP, any host name). It never expires.
DATABASE_ID = f"{PREFIX}:database-id"
#: The prefix of Celery's Redis result backend keys (``celery-task-meta-<task id>``).
CELERY_RESULT_PREFIX = "celery-task-meta-"


@dataclass(frozen=True)
class RefKeys:
    """The keys of one ref."""

    member: str
    lease: str
    fence: str
    holder: str
    status: str


def status_key(member: str) -> str:
    """The status hash of the ref whose hash (its member in :data:`ACTIVE`) is ``member``."""
    return f"{PREFIX}:status:{{{member}}}"


def ref_keys(ref: str) -> RefKeys:
    """The Redis keys for ``ref``."""
    h = ref_key(ref)
    return RefKeys(
        member=h,
        lease=f"{PREFIX}:lease:{{{h}}}",
        fence=f"{PREFIX}:fence:{{{h}}}",
        holder=f"{PREFIX}:holder:{{{h}}}",
        status=status_key(h),
    )


def job_key(job_id: str) -> str:
    """The hash recording a queued job (ref, source, error record, cancel flag)."""
    return f"{PREFIX}:job:{job_id}"


def finalize_claim_key(pull_id: str) -> str:
    """The key a pull's finalize takes before it records the image (``SET NX PX``), so
    two finalizes of one pull never record it at once."""
    return f"{PREFIX}:finalize:{pull_id}"


def batch_done_key(batch_id: str) -> str:
    """The key a batch message sets once every job of it has ended or been handed on,
    so that a redelivered copy hands nothing on twice."""
    return f"{PREFIX}:batch:{batch_id}"


def batch_handed_key(batch_id: str) -> str:
    """The set of the job ids a batch message has handed on as messages of their own
    (before it ran to its end), so that a redelivered copy does not send them again."""
    return f"{PREFIX}:batch:{batch_id}:handed"


def idempotency_key(key: str) -> str:
    """The key mapping an idempotency key to the job it created."""
    return f"{PREFIX}:idem:{key}"


def result_key(job_id: str) -> str:
    """Celery's result meta of task ``job_id`` (JSON, written by the result backend)."""
    return f"{CELERY_RESULT_PREFIX}{job_id}"
