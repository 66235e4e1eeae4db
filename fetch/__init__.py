"""Fetching: sources of bytes (HTTP(S), registries, OCI layouts, files), references,
manifests, platforms and ingest ref keys. Knows nothing of Celery, Redis or gRPC."""
