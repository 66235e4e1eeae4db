"""Pull job values: :class:`PullStatus` (the pull job's state with every blob's status)
and :func:`with_child_job_ids` (the ids of a queued pull's child jobs)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ingestq.images.plan import PullPlan
from ingestq.images.status import BlobStatus
from ingestq.jobs.api import JobState, job_id_for
from ingestq.store.values import Descriptor


@dataclass(frozen=True)
class PullStatus:
    """A pull's state and its blobs' (empty until the plan exists)."""

    id: str
    state: JobState
    reference: str
    name: str | None = None
    reason: str | None = None
    target: Descriptor | None = None
    blobs: tuple[BlobStatus, ...] = ()

    @property
    def bytes_done(self) -> int:
        """Bytes committed or written so far, over every blob."""
        return sum(b.done_bytes for b in self.blobs)

    @property
    def bytes_total(self) -> int:
        """Bytes of every blob (0 until planned)."""
        return sum(b.size for b in self.blobs)

    def to_json(self) -> dict[str, Any]:
        """A JSON object."""
        return {
            "id": self.id,
            "state": self.state.value,
            "reference": self.reference,
            "name": self.name,
            "reason": self.reason,
            "target": self.target.to_oci() if self.target else None,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "blobs": [b.to_json() for b in self.blobs],
        }


def with_child_job_ids(plan: PullPlan, pull_id: str) -> PullPlan:
    """``plan`` with a job id per child, derived from ``pull_id`` and the child's digest
    (so a redelivered pull names the same jobs)."""
    children = tuple(
        replace(c, job_id=job_id_for(f"pull:{pull_id}:{c.desc.digest}")) for c in plan.children
    )
    return replace(plan, children=children)
