"""The in-process backend of the job interface: :class:`LocalClient` runs ingest and
pull jobs in threads of this process against the store at ``settings.root``, with no
server (the embedded default when no Redis is configured).

Imports store and this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ingestq.images.request import PullRequest
from ingestq.ingest.request import IngestRequest
from ingestq.jobs.api import ActiveIngest, JobState, JobSummary
from ingestq.jobs.config import Settings, open_store
from ingestq.jobs.local.context import JobThreads, LocalContext, state_of
from ingestq.jobs.local.ingest import LocalIngestJob, submit_ingest
from ingestq.jobs.local.pull import LocalPullJob, submit_pull
from ingestq.jobs.local.records import FileJobRecords
from ingestq.jobs.records import KIND_INGEST, JobRecordStore, error_from_text
from ingestq.store.local import LocalStore
from ingestq.store.values import Status

if TYPE_CHECKING:
    from ingestq.s3 import S3Store


class LocalClient:
    """Runs jobs in this process (the :class:`ingestq.jobs.api.JobClient` protocol).

    Job records live in ``records`` (default: files under the store root, so every
    process of the host that opens the same root sees and can cancel the jobs).
    """

    def __init__(self, settings: Settings, records: JobRecordStore | None = None) -> None:
        store = open_store(settings)
        if records is None:
            records = FileJobRecords(store.root, sync=settings.fsync)
        self._ctx = LocalContext(settings, store, records, JobThreads())

    @property
    def settings(self) -> Settings:
        """The settings the client was made with."""
        return self._ctx.settings

    @property
    def store(self) -> LocalStore | S3Store:
        """The store jobs write to."""
        return self._ctx.store

    @property
    def records(self) -> JobRecordStore:
        """Where the job records live."""
        return self._ctx.records

    @property
    def in_process(self) -> bool:
        """True: jobs run in this process."""
        return True

    def submit_ingest(
        self,
        request: IngestRequest,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        retries: int | None = None,
    ) -> LocalIngestJob:
        """Start ``request`` in a thread of this process (or return the existing job of
        the same id / idempotency key); ``retries`` bounds its source retries."""
        return submit_ingest(self._ctx, request, job_id, idempotency_key, retries)

    def submit_ingests(
        self, requests: Sequence[IngestRequest], *, retries: int | None = None
    ) -> list[LocalIngestJob]:
        """Start every request as a new job in this process; their handles, in order."""
        return [submit_ingest(self._ctx, r, None, None, retries) for r in requests]

    def submit_pull(
        self,
        request: PullRequest,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        retries: int | None = None,
    ) -> LocalPullJob:
        """Start the pull ``request`` in a thread of this process (or return the
        existing job of the same id / idempotency key)."""
        return submit_pull(self._ctx, request, job_id, idempotency_key, retries)

    def job(self, job_id: str) -> LocalIngestJob:
        """A handle on ingest job ``job_id`` of this host."""
        return LocalIngestJob(self._ctx, job_id)

    def pull(self, job_id: str) -> LocalPullJob:
        """A handle on pull job ``job_id`` of this host."""
        return LocalPullJob(self._ctx, job_id)

    def cancel(self, job_id: str) -> None:
        """Cancel ``job_id`` (in this process or another on this host). NotFound for an
        unknown job."""
        self._ctx.cancel(job_id)

    def active(self) -> list[ActiveIngest]:
        """The ingests in this host's store, live (locked by a writer) or resumable,
        with the job id, source and rate of the unfinished job writing each (from the
        job records)."""
        running: dict[str, tuple[str, dict[str, str]]] = {}
        for job_id, rec in self.records.list():
            ref = rec.get("ref", "")
            if ref and ref not in running and not state_of(rec).done:
                running[ref] = (job_id, rec)
        return [_from_status(s, *running.get(s.ref, ("", {}))) for s in self.store.list_statuses()]

    def jobs(self, limit: int = 1000) -> list[JobSummary]:
        """The jobs recorded under the store root, newest first (state as
        :meth:`job` reads it: a job whose process died reads as failed)."""
        out = []
        for job_id, rec in self.records.list(limit):
            rec = self._ctx.read(job_id) or rec
            out.append(summary(job_id, rec, state_of(rec)))
        return out

    def close(self) -> None:
        """Wait for the jobs started by this client."""
        self._ctx.threads.join_all()


def summary(job_id: str, rec: dict[str, str], state: JobState) -> JobSummary:
    """The :class:`JobSummary` of record ``rec`` in ``state``."""
    try:
        created = float(rec.get("created_at") or 0)
    except ValueError:
        created = 0.0
    err = error_from_text(rec.get("error"))
    reason = str(err) if err is not None else rec.get("reason", "")
    return JobSummary(
        job_id,
        rec.get("kind", KIND_INGEST),
        state,
        rec.get("source", ""),
        rec.get("ref", ""),
        created,
        rec.get("parent", ""),
        reason if state in (JobState.RETRYING, JobState.FAILED, JobState.CANCELED) else "",
    )


def _from_status(s: Status, job_id: str, rec: dict[str, str]) -> ActiveIngest:
    h = s.holder
    try:
        rate = float(rec.get("rate") or 0) if h is not None else 0.0
    except ValueError:
        rate = 0.0
    return ActiveIngest(
        ref=s.ref,
        offset=s.offset,
        total=s.total,
        expected=str(s.expected) if s.expected else "",
        started_at=s.started_at,
        updated_at=s.updated_at,
        holder=h.id if h else "",
        host=h.host if h else "",
        pid=h.pid if h else 0,
        fence=h.fence if h else 0,
        job_id=job_id,
        source=rec.get("source", ""),
        rate=rate,
    )


__all__ = ["LocalClient", "summary"]
