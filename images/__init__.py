"""Images: pull planning and finalize, the OCI view and image status values.
Knows nothing of Celery or Redis."""
