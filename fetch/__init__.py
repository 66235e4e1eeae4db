"""Fetching, after containerd's ``remotes/``: where the bytes come from.

Owns the sources of bytes behind one protocol (:mod:`~ingestq.fetch.source`): HTTP(S)
URLs (:mod:`~ingestq.fetch.http`), registries (:mod:`~ingestq.fetch.registry`), OCI
image layouts (:mod:`~ingestq.fetch.ocilayout`) and local files
(:mod:`~ingestq.fetch.files`); the one HTTP layer they share
(:mod:`~ingestq.fetch.httpio` on :mod:`~ingestq.fetch.transport`); the JSON specs jobs
carry and their factories (:mod:`~ingestq.fetch.specs`, configured by
:class:`~ingestq.fetch.options.FetchOptions`); image references, manifests, platforms
and default ingest ref keys (:mod:`~ingestq.fetch.reference`,
:mod:`~ingestq.fetch.manifests`, :mod:`~ingestq.fetch.platforms`,
:mod:`~ingestq.fetch.refkey`); and the contract every source owes, as a test suite
(:mod:`~ingestq.fetch.testing`, which needs pytest).

May import :mod:`ingestq.errdefs`, :mod:`ingestq.store` (digests, descriptors,
annotations, OS-error mapping), httpx and httpcore; never ``ingest``, ``images``,
``jobs``, ``tasks``, ``api`` or ``worker``, and nothing of Celery, Redis or gRPC.
"""
