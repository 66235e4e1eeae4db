"""Jobs: one job interface for ingests and pulls, its in-process backend, the job
records, the configuration and the one retry policy.

- :mod:`.api`: the interface (``JobClient``, ``IngestJob``, ``PullJob``, states);
- :mod:`.ingest`, :mod:`.pull`: what each job kind is beyond it (requests, errors);
- :mod:`.local`: the in-process backend (the Celery backend is ``ingestq.tasks.queue``);
- :mod:`.records`: the job record store interface and its in-memory store
  (files: :mod:`.local.records`; Redis: ``ingestq.tasks.records``);
  :mod:`.testing`: the contract every record store passes;
- :mod:`.retry`: how failed attempts are retried (``RetryPolicy``), for both backends;
- :mod:`.cancel`: cancel hooks of a running job; :mod:`.wait`: waiting for an outcome;
- :mod:`.config`: ``Settings`` from the environment.

May import errdefs, store, fetch, ingest and images; never Celery, Redis, gRPC or
``ingestq.tasks`` (which builds on this package).
"""
