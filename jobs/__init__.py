"""Jobs: one job interface for ingests and pulls, the in-process backend, configuration
and the retry policy. Knows nothing of gRPC."""
