"""Redis key names of the lease, the status board and the job records.

A ref can be any string up to 4 KiB, so keys use ``sha256(ref)`` (the same name the
store gives the ingest directory). Per-ref keys share a ``{hash}`` tag so the scripts
touching them stay in one Redis Cluster slot; the active index is global.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingestq.store.locks import ref_key

PREFIX = "ingestq"
ACTIVE = f"{PREFIX}:active"


@dataclass(frozen=True)
class RefKeys:
    """The keys of one ref."""

    member: str
    lease: str
    fence: str
    holder: str
    status: str


def ref_keys(ref: str) -> RefKeys:
    """The Redis keys for ``ref``."""
    h = ref_key(ref)
    return RefKeys(
        member=h,
        lease=f"{PREFIX}:lease:{{{h}}}",
        fence=f"{PREFIX}:fence:{{{h}}}",
        holder=f"{PREFIX}:holder:{{{h}}}",
        status=f"{PREFIX}:status:{{{h}}}",
    )


def job_key(job_id: str) -> str:
    """The hash recording a queued job (ref, source, error record, cancel flag)."""
    return f"{PREFIX}:job:{job_id}"


def idempotency_key(key: str) -> str:
    """The key mapping an idempotency key to the job it created."""
    return f"{PREFIX}:idem:{key}"
