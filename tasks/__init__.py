"""Queue-driven ingestion: the Celery app, ingest and pull tasks, sources, Redis leases and
the status board, and the producer client."""
