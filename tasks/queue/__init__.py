"""The Celery backend of the job interface: jobs published to workers through Redis.

- :mod:`.client`: :class:`QueueClient`, the backend (publish, find, list active);
- :mod:`.ingest`: a queued ingest job (publishing it, its handle);
- :mod:`.pull`: a queued pull (publishing it, its handle: status, wait, cancel);
- :mod:`.context`: the connections the handles share.

The worker side of the same jobs is :mod:`ingestq.tasks.ingest_task` and
:mod:`ingestq.tasks.pull_task`; the in-process backend is :mod:`ingestq.jobs.local`.
"""

from ingestq.tasks.queue.client import QueueClient

__all__ = ["QueueClient"]
