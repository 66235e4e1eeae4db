"""OCI distribution registries as a source: the client, blob sources and images
(:mod:`~ingestq.fetch.registry.client`), Bearer/Basic authentication
(:mod:`~ingestq.fetch.registry.auth`) and the OCI error codes on top of the one HTTP
status mapping (:mod:`~ingestq.fetch.registry.errors`). HTTP itself is
:mod:`ingestq.fetch.httpio`'s."""
