"""The errdefs <-> gRPC boundary of the API, on both sides.

Server side: every error that leaves a handler goes through :func:`errdefs.to_grpc`, so
an errdefs kind becomes its status code with the **full** message (``content
sha256:...: not found``) and anything else becomes Unknown with its text preserved; a
message longer than :data:`MAX_MESSAGE` bytes (one echoing a huge digest, ref or filter)
is cut in its middle, keeping its ``: <kind>`` ending. gRPC sends the message in a
header, percent-encoded: a long one breaks the client's header limit (grpcio's C core
then reports ResourceExhausted, whatever the code was).
Handlers raise; only :func:`unary` and :func:`stream` (the decorators every servicer
method wears) call ``context.abort``.

Client side: :func:`from_rpc_error` turns a failed call back into the errdefs error
with :func:`errdefs.from_grpc`, so ``except errdefs.NotFound`` works over the wire.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

import grpc

from ingestq import errdefs

log = logging.getLogger("ingestq.api")

T = TypeVar("T")
S = TypeVar("S")
Req = TypeVar("Req")

_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}

#: Kinds that are part of normal operation (clients act on them); logged at debug level.
_QUIET = (errdefs.NotFound, errdefs.AlreadyExists, errdefs.Unavailable)


def status_code(code: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` with number ``code`` (UNKNOWN for numbers gRPC lacks)."""
    return _BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)


#: The longest status message sent, in UTF-8 bytes (at most 3 times as many once
#: percent-encoded, well inside gRPC's 8 KiB default header limit).
MAX_MESSAGE = 1024

_CUT = " [...]"


def bounded_message(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` if it is at most ``limit`` UTF-8 bytes, else its start, `` [...]``
    and its end from the last ``": "`` (the kind, when that is short)."""
    data = message.encode()
    if len(data) <= limit:
        return message
    colon = message.rfind(": ")
    tail = message[colon:] if colon >= 0 and len(message) - colon <= 64 else ""
    room = limit - len(tail.encode()) - len(_CUT)
    return data[:room].decode(errors="ignore") + _CUT + tail


def abort(context: grpc.ServicerContext, err: BaseException, method: str = "") -> NoReturn:
    """End the RPC with ``errdefs.to_grpc(err)``: the kind's code and its message,
    bounded (:func:`bounded_message`)."""
    code, message = errdefs.to_grpc(err)
    message = bounded_message(message)
    if isinstance(errdefs.from_exception(err), _QUIET):
        log.debug("%s: %s", method, message)
    else:
        log.warning("%s failed: %s", method, message, exc_info=code == 2)
    context.abort(status_code(code), message)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


def unary(
    fn: Callable[[S, Req, grpc.ServicerContext], T],
) -> Callable[[S, Req, grpc.ServicerContext], T]:
    """Decorate a unary servicer method: any exception it raises ends the RPC through
    :func:`abort`."""

    def wrapper(self: S, request: Req, context: grpc.ServicerContext) -> T:
        try:
            return fn(self, request, context)
        except Exception as e:
            abort(context, e, fn.__qualname__)

    functools.update_wrapper(wrapper, fn)
    return wrapper


def stream(
    fn: Callable[[S, Req, grpc.ServicerContext], Iterator[T]],
) -> Callable[[S, Req, grpc.ServicerContext], Iterator[T]]:
    """Decorate a response-streaming servicer method (a generator): an exception raised
    while producing responses ends the RPC through :func:`abort`. The generator's own
    ``finally`` blocks run before the status goes out."""

    def wrapper(self: S, request: Req, context: grpc.ServicerContext) -> Iterator[T]:
        try:
            yield from fn(self, request, context)
        except Exception as e:
            abort(context, e, fn.__qualname__)

    functools.update_wrapper(wrapper, fn)
    return wrapper


def from_rpc_error(err: grpc.RpcError) -> errdefs.ErrdefsError:
    """The errdefs error for a failed call (``errdefs.from_grpc`` of its code and
    details). A call error without a status code is Unknown with its text."""
    code = err.code() if isinstance(err, grpc.Call) else None
    details = err.details() if isinstance(err, grpc.Call) else None
    if code is None or code == grpc.StatusCode.OK:
        converted: errdefs.ErrdefsError = errdefs.Unknown(details or str(err))
    else:
        converted = errdefs.from_grpc(code.value[0], details or "")
    converted.__cause__ = err
    return converted


def call(fn: Callable[[], T]) -> T:
    """Run one client call; a ``grpc.RpcError`` comes out as its errdefs error."""
    try:
        return fn()
    except grpc.RpcError as e:
        raise from_rpc_error(e) from None
