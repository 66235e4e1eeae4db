"""The in-process backend of the job interface: jobs run in threads of this process, no
server needed.

- :mod:`.client`: :class:`LocalClient`, the backend (submit, find, cancel, list active);
- :mod:`.ingest`: an ingest job (the runner and its handle);
- :mod:`.pull`: a pull job (plan, children in a thread pool, finalize; its handle);
- :mod:`.context`: what the jobs share (threads, record updates, reading state back);
- :mod:`.records`: job records as files under the store root.

Imports errdefs, store, fetch, ingest, images and the rest of ``ingestq.jobs``; never
Celery, Redis or ``ingestq.tasks``.
"""

from ingestq.jobs.local.client import LocalClient

__all__ = ["LocalClient"]
