"""The processes: the Celery worker bootstrap, the gRPC server and the ``ingestq`` CLI."""
