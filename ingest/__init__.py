"""The ingest core: one blob from a Source into the store, resumable and verified.
Knows nothing of Celery or Redis."""
