"""The thin Celery/Redis adapter: the Celery backend of the job interface and the
worker side of its jobs.

- :mod:`.app`: the Celery app, configured on purpose (``celery -A ingestq.tasks.app``);
- :mod:`.ingest_task`, :mod:`.batch_task`, :mod:`.pull_task`: the tasks workers run
  (ingest; a batch of small local-file ingests, :mod:`.batching`; pull, finalize);
- :mod:`.runtime`: what a worker process builds once (store, lease, Redis clients);
- :mod:`.queue`: the producer side, :class:`~ingestq.tasks.queue.QueueClient` and the
  handles on queued ingests and pulls (status, wait, cancel);
- :mod:`.client`: ``connect`` (picks the Celery or the in-process backend) and the
  producer API ``enqueue_ingest``, ``enqueue_many``, ``enqueue_pull``, ``get_job``, ``get_pull``;
- :mod:`.codec`: the Celery error codec (encode, decode result meta, normalize);
- :mod:`.results`: the one reader of Celery's result keys; :mod:`.backend`: the result
  backend that writes them in one script (with the task's put-off lease releases);
- :mod:`.records`: job records in Redis; :mod:`.keys`: every Redis key name;
- :mod:`.lease`: Redis leases on refs (the cross-host ref lock, heartbeat);
  :mod:`.statusboard`: every live ingest; :mod:`.lua`: their scripts;
- :mod:`.redisconn`: Redis clients made on purpose; :mod:`.metrics`: Prometheus.

May import every package but api/ and worker/; the domain (what a job does, how it is
retried) lives in ``ingestq.jobs`` and below, never here.
"""
