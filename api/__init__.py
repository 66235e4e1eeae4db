"""containerd's content gRPC API over the store: protos and generated modules
(``api.proto``), the errdefs boundary (``api.errors``), namespaces (``api.namespaces``),
the server (``api.server``) and a client store (``api.client``)."""

#: The largest gRPC message sent or accepted, both ways (containerd's limit).
MAX_MESSAGE = 16 << 20
