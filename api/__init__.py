"""containerd's content gRPC API over the store: protos, generated modules, the service,
and a client store."""
