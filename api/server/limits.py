"""Bounds on streaming RPCs, so that streams can never take every server thread.

grpc's sync server runs each RPC on one pool thread from start to end, and a stream
holds its thread while it waits for the client: for the next request of a Write, or for
the client to take the next response of a Read. :class:`StreamGuard`, a server
interceptor, applies three rules:

* **budget**: at most ``max_streams`` of the budgeted streams (the long, client-paced
  ones: Content Write, Read and List) run at once; one more is answered ResourceExhausted at
  once. The budget is below the thread pool's size, so unary calls always find a
  thread;
* **request idle timeout**: a request-streaming RPC waits at most ``idle_timeout``
  seconds for the client's next message, then fails with DeadlineExceeded, raised from
  the request iterator inside the handler, so the handler's own cleanup runs (a Write
  closes its writer and keeps the partial data for a resume). grpc's request iterator
  cannot be waited on with a timeout, so each such stream reads its requests on a reader
  thread of its own, one message at a time as the handler asks (at most one per open
  stream: bounded by the budget);
* **send idle timeout**: a response the client has not taken ``idle_timeout`` seconds
  after it was handed to grpc (flow control: the client stopped reading) cancels the
  RPC, which frees the thread. The client gets CANCELLED, if it ever looks.

The server also passes ``maximum_concurrent_rpcs`` (the pool size) to grpc, which then
answers calls beyond it ResourceExhausted instead of queueing them (see
:class:`ingestq.api.server.ApiServer`).
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from ingestq import errdefs
from ingestq.api.errors import abort

log = logging.getLogger("ingestq.api")

__all__ = ["IdleRequests", "StreamGuard", "Watchdog"]

if TYPE_CHECKING:  # generic only in the type stubs
    _Interceptor = grpc.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor
    _Handler = grpc.RpcMethodHandler


class Watchdog:
    """One thread that calls ``callback`` when an armed deadline passes unless it was
    disarmed first. Callbacks run on the watchdog's thread, outside its lock."""

    def __init__(self, name: str = "ingestq-api-watchdog") -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, Callable[[], object]]] = {}
        self._ids = itertools.count()
        self._wake_at = math.inf
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def arm(self, timeout: float, callback: Callable[[], object]) -> int:
        """Call ``callback`` in ``timeout`` seconds; returns the token for :meth:`disarm`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            token = next(self._ids)
            self._armed[token] = (deadline, callback)
            if deadline < self._wake_at:
                self._cond.notify()
        return token

    def disarm(self, token: int) -> None:
        """Forget ``token`` (no-op if it already fired)."""
        with self._cond:
            self._armed.pop(token, None)

    def close(self) -> None:
        """Stop the thread; armed callbacks never run."""
        with self._cond:
            self._closed = True
            self._armed.clear()
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                due = [t for t, (deadline, _) in self._armed.items() if deadline <= now]
                fire = [self._armed.pop(t)[1] for t in due]
                if not fire:
                    self._wake_at = min((d for d, _ in self._armed.values()), default=math.inf)
                    self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)
                    self._wake_at = -math.inf  # awake: arm() need not notify
                    continue
            for callback in fire:
                try:
                    callback()
                except Exception:  # a failing callback must not stop the others
                    log.exception("watchdog callback failed")


class _Budget:
    """A count of open budgeted streams with a hard limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._used = 0

    def try_take(self) -> bool:
        with self._lock:
            if self._used >= self.limit:
                return False
            self._used += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._used -= 1


_ASKED = object()


def _short(method: str) -> str:
    """``Write`` for ``/containerd.services.content.v1.Content/Write``."""
    return method.rpartition("/")[2]


class IdleRequests(Iterator[Any]):
    """A request iterator whose ``next`` waits at most ``timeout`` seconds, then raises
    DeadlineExceeded. The underlying (blocking) iterator is read on a reader thread, one
    message per ``next`` call (no read-ahead, so grpc's flow control still applies).
    :meth:`close` lets the reader thread end once its pending read returns (grpc ends
    it when the RPC ends)."""

    def __init__(self, requests: Iterator[Any], timeout: float, method: str) -> None:
        self._requests = requests
        self._timeout = timeout
        self._method = method
        self._asks: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._answers: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ended = False

    def __next__(self) -> Any:
        if self._ended:
            raise StopIteration
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._read, name="ingestq-api-reader", daemon=True
            )
            self._thread.start()
        self._asks.put(_ASKED)
        try:
            ok, value = self._answers.get(timeout=self._timeout)
        except queue.Empty:
            self._ended = True
            raise errdefs.DeadlineExceeded(
                f"{_short(self._method)} stream idle: no message from the client "
                f"for {self._timeout:g}s"
            ) from None
        if ok:
            return value
        self._ended = True
        raise value  # StopIteration (half-close) or grpc.RpcError (client gone)

    def close(self) -> None:
        """Let the reader thread end."""
        self._ended = True
        self._asks.put(None)

    def _read(self) -> None:
        while self._asks.get() is _ASKED:
            try:
                item = next(self._requests)
            except BaseException as e:  # StopIteration or grpc.RpcError: the stream ended
                self._answers.put((False, e))
                return
            self._answers.put((True, item))


class StreamGuard(_Interceptor):
    """The interceptor applying the module's rules to every streaming RPC.
    ``budgeted``: the full method paths (``/pkg.Service/Method``) counted against
    ``max_streams``. :meth:`close` after the server stopped."""

    def __init__(self, *, max_streams: int, idle_timeout: float, budgeted: Collection[str]) -> None:
        if max_streams < 1:
            raise errdefs.InvalidArgument(f"max streams must be at least 1, not {max_streams}")
        if not idle_timeout > 0:
            raise errdefs.InvalidArgument(
                f"stream idle timeout must be above 0 seconds, not {idle_timeout}"
            )
        self._budget = _Budget(max_streams)
        self.idle_timeout = idle_timeout
        self._budgeted = frozenset(budgeted)
        self._watchdog = Watchdog()

    @property
    def max_streams(self) -> int:
        """How many budgeted streams may be open at once."""
        return self._budget.limit

    def close(self) -> None:
        """Stop the watchdog thread."""
        self._watchdog.close()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        """Wrap streaming handlers; unary ones pass unchanged."""
        handler = continuation(handler_call_details)
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        method: str = handler_call_details.method
        budgeted = method in self._budgeted
        serdes = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.request_streaming and handler.response_streaming:
            assert handler.stream_stream is not None
            return grpc.stream_stream_rpc_method_handler(
                self._guard_stream(handler.stream_stream, method, budgeted, True), **serdes
            )
        if handler.response_streaming:
            assert handler.unary_stream is not None
            return grpc.unary_stream_rpc_method_handler(
                self._guard_stream(handler.unary_stream, method, budgeted, False), **serdes
            )
        assert handler.stream_unary is not None
        return grpc.stream_unary_rpc_method_handler(
            self._guard_unary(handler.stream_unary, method, budgeted), **serdes
        )

    def _take(self, context: grpc.ServicerContext, method: str, budgeted: bool) -> None:
        if budgeted and not self._budget.try_take():
            name = _short(method)
            abort(
                context,
                errdefs.ResourceExhausted(
                    f"{name}: all {self._budget.limit} streams are in use, retry later"
                ),
                name,
            )

    def _guard_stream(
        self,
        behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
        method: str,
        budgeted: bool,
        request_streaming: bool,
    ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            self._take(context, method, budgeted)
            requests = (
                IdleRequests(request, self.idle_timeout, method) if request_streaming else None
            )
            try:
                responses = behaviour(request if requests is None else requests, context)
                for response in responses:
                    token = self._watchdog.arm(
                        self.idle_timeout, lambda: self._stalled(context, method)
                    )
                    try:
                        yield response
                    finally:
                        self._watchdog.disarm(token)
            finally:
                if requests is not None:
                    requests.close()
                if budgeted:
                    self._budget.give_back()

        return guarded

    def _guard_unary(
        self, behaviour: Callable[[Any, grpc.ServicerContext], Any], method: str, budgeted: bool
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def guarded(request: Iterator[Any], context: grpc.ServicerContext) -> Any:
            self._take(context, method, budgeted)
            requests = IdleRequests(request, self.idle_timeout, method)
            try:
                return behaviour(requests, context)
            finally:
                requests.close()
                if budgeted:
                    self._budget.give_back()

        return guarded

    def _stalled(self, context: grpc.ServicerContext, method: str) -> None:
        log.warning(
            "%s: the client took no response for %gs; cancelling the call",
            _short(method),
            self.idle_timeout,
        )
        cancel: Callable[[], object] = context.cancel
        cancel()
