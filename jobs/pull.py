"""Pull jobs: the handle a producer holds on a pull, and how a pull is started or
found in either mode."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from ingestq import errdefs
from ingestq.fetch import platforms as _platforms
from ingestq.fetch.registry.client import RegistryOptions
from ingestq.images.plan import PlannedBlob
from ingestq.images.request import PullRequest
from ingestq.images.status import PullResult
from ingestq.jobs.api import JobClient, JobState, job_id_for
from ingestq.jobs.config import Settings
from ingestq.jobs.pullstatus import PullStatus


class PullJob(Protocol):
    """A handle on one pull job (embedded or queued)."""

    @property
    def id(self) -> str:
        """The job id."""
        ...

    @property
    def state(self) -> JobState:
        """The pull's state (a fresh read)."""
        ...

    def status(self) -> PullStatus:
        """The pull's state and every blob's (see :class:`PullStatus`)."""
        ...

    def wait(self, timeout: float | None = None) -> PullResult:
        """Block until done; the result, or the pull's errdefs error (DeadlineExceeded
        after ``timeout`` seconds, NotFound for an unknown job)."""
        ...

    def cancel(self) -> None:
        """Stop the pull and its children (ingests are kept for resume)."""
        ...


def child_error(plan_name: str, blob: PlannedBlob, err: BaseException) -> errdefs.ErrdefsError:
    """``err`` of a child, as the pull's error: same kind, ``pull <name>: <ref>: ...``."""
    return errdefs.wrap(err, f"pull {plan_name}: {blob.ref}")


# -- the producer API -------------------------------------------------------------------
def enqueue_pull(
    reference: str | PullRequest,
    *,
    platforms: Sequence[str] = (),
    all_platforms: bool = False,
    options: RegistryOptions | None = None,
    name: str | None = None,
    job_id: str | None = None,
    idempotency_key: str | None = None,
    settings: Settings | None = None,
    client: JobClient | None = None,
) -> PullJob:
    """Start a pull of ``reference`` (or a full :class:`PullRequest`).

    With Redis configured the pull is queued for workers; otherwise it runs in this
    process. Without ``platforms`` (and ``all_platforms``) the platform of this host is
    pulled, wherever the pull runs. ``job_id`` / ``idempotency_key`` work as for
    ingests: the same id or key returns the first job and starts nothing.

    Raises InvalidArgument for a malformed reference or platform, Unavailable when
    Redis cannot be reached. Failures of the pull itself come from :meth:`PullJob.wait`.
    """
    from ingestq.jobs.local import LocalClient
    from ingestq.tasks.producer import QueueClient, connect

    request = (
        reference
        if isinstance(reference, PullRequest)
        else PullRequest(
            reference,
            tuple(platforms),
            all_platforms,
            options or RegistryOptions(),
            name,
        )
    )
    request.validate()
    if not request.platforms and not request.all_platforms:
        # The default platform is the one of the host that asks, not of the worker.
        request = replace(request, platforms=(str(_platforms.host()),))
    if job_id is None and idempotency_key is not None:
        job_id = job_id_for(idempotency_key)
    jobs = client if client is not None else connect(settings)
    if isinstance(jobs, QueueClient):
        from ingestq.tasks.pullclient import enqueue_queued_pull

        return enqueue_queued_pull(jobs, request, job_id, idempotency_key)
    if isinstance(jobs, LocalClient):
        from ingestq.jobs.localpull import start_local_pull

        return start_local_pull(jobs, request, job_id)
    raise errdefs.InvalidArgument(f"cannot pull through {type(jobs).__name__}")


def get_pull(
    job_id: str, settings: Settings | None = None, client: JobClient | None = None
) -> PullJob:
    """A handle on pull job ``job_id`` (state ``unknown`` if there is none)."""
    from ingestq.jobs.local import LocalClient
    from ingestq.tasks.producer import QueueClient, connect

    jobs = client if client is not None else connect(settings)
    if isinstance(jobs, QueueClient):
        from ingestq.tasks.pullclient import QueuePullJob

        return QueuePullJob(jobs, job_id)
    if isinstance(jobs, LocalClient):
        from ingestq.jobs.localpull import LocalPullJob

        return LocalPullJob(jobs, job_id)
    raise errdefs.InvalidArgument(f"cannot follow pulls through {type(jobs).__name__}")


__all__ = ["PullJob", "child_error", "enqueue_pull", "get_pull"]
