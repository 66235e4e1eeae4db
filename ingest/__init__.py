"""The ingest core: one blob from a Source into the store, resumable and verified.

Owns the ingest request and result values (:mod:`.request`, :mod:`.outcome`), what the
core needs of a store (:mod:`.protocols`), one attempt (:mod:`.attempt`: resume,
verify, commit), the in-process wait while a ref is locked (:mod:`.wait`) and the
lifecycle hooks that progress, metrics and status subscribers plug into (:mod:`.hooks`).

May import ``errdefs``, ``store`` and ``fetch`` only: never ``images``, ``jobs``,
``tasks``, ``api`` or ``worker``, nor Celery, Redis or prometheus_client. Whoever runs an
ingest passes its subscribers in (the tasks layer: Redis lease status and prometheus
metrics; the jobs layer: cancellation).
"""
