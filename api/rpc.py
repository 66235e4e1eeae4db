"""Typed glue between gRPC and the generated message modules.

Servicers are registered, and client callables built, from the proto **descriptors**
(``<module>_pb2.DESCRIPTOR.services_by_name``), so method paths are exactly containerd's
(``/containerd.services.content.v1.Content/Write``) and the untyped generated
``*_pb2_grpc`` modules (kept for other users) are not needed here.
"""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)

_HANDLERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_service(server: grpc.Server, service: ServiceDescriptor, servicer: object) -> None:
    """Route every method of ``service`` to ``servicer``'s attribute of the same name
    (AttributeError at registration if one is missing)."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        behaviour: Any = getattr(servicer, method.name)
        make = _HANDLERS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            behaviour,
            request_deserializer=GetMessageClass(method.input_type).FromString,
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


def _path(service: ServiceDescriptor, name: str, req: type[Message], resp: type[Message]) -> str:
    method = service.methods_by_name[name]
    if (method.input_type.full_name, method.output_type.full_name) != (
        req.DESCRIPTOR.full_name,
        resp.DESCRIPTOR.full_name,
    ):
        raise TypeError(f"{service.full_name}.{name} does not take {req.__name__}")
    return f"/{service.full_name}/{name}"


def unary_unary(
    channel: grpc.Channel, service: ServiceDescriptor, name: str, req: type[Req], resp: type[Resp]
) -> grpc.UnaryUnaryMultiCallable[Req, Resp]:
    """The client callable of a unary method."""
    return channel.unary_unary(
        _path(service, name, req, resp),
        request_serializer=req.SerializeToString,
        response_deserializer=resp.FromString,
    )


def unary_stream(
    channel: grpc.Channel, service: ServiceDescriptor, name: str, req: type[Req], resp: type[Resp]
) -> grpc.UnaryStreamMultiCallable[Req, Resp]:
    """The client callable of a response-streaming method."""
    return channel.unary_stream(
        _path(service, name, req, resp),
        request_serializer=req.SerializeToString,
        response_deserializer=resp.FromString,
    )


def stream_stream(
    channel: grpc.Channel, service: ServiceDescriptor, name: str, req: type[Req], resp: type[Resp]
) -> grpc.StreamStreamMultiCallable[Req, Resp]:
    """The client callable of a bidirectional-streaming method."""
    return channel.stream_stream(
        _path(service, name, req, resp),
        request_serializer=req.SerializeToString,
        response_deserializer=resp.FromString,
    )
