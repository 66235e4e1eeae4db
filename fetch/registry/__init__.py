"""OCI distribution registries: the client, authentication and error mapping."""
