"""The one HTTP layer of :mod:`ingestq.fetch`: how every source speaks HTTP.

The HTTP source (:mod:`ingestq.fetch.http`) and the registry client
(:mod:`ingestq.fetch.registry`) share, from here:

* :func:`new_client`: an httpx client on the large-read transport of
  :mod:`ingestq.fetch.transport` (the environment's proxies, when set, are honoured
  through httpx's own transports instead), with bounded redirects and separate connect
  and read timeouts; :func:`ssl_context` for a CA bundle, a client certificate or no
  verification (by default, for HTTP sources and registries alike, the system's CAs,
  read only once a TLS handshake needs them);
* :func:`send`: one streamed request, transport failures mapped;
* :func:`transport_error`: the one table from httpx exceptions to errdefs kinds;
* :func:`status_kind` / :func:`status_error`: the one mapping of HTTP status codes
  (the registry adds its OCI error codes on top, :mod:`ingestq.fetch.registry.errors`);
* :func:`retry_after`: the one ``Retry-After`` parser;
* :func:`range_headers` / :func:`open_range`: the one ranged GET, with the
  Content-Range check; :func:`conditional_headers` for a GET that may answer 304;
* :class:`BodyStream`: the one response body stream, with curl's low-speed rule
  (:class:`LowSpeed`), decoding a ``Content-Encoding`` a piece at a time
  (:mod:`ingestq.fetch.decoding`);
* small bodies: every response that is not a 200 or 206 (an error, a redirect, a
  challenge; httpx itself reads those whole), and a request marked with
  :func:`small_body` (a manifest, a token), is read at most :data:`SMALL_BODY_MAX` bytes
  (or the mark's limit) and within :data:`SMALL_BODY_TIME` seconds, decoded here a
  piece at a time: a hostile server's endless or compressed body costs nothing more.

Transport failures (:func:`transport_error`):

=============================================  =========================================
httpx exception                                kind
=============================================  =========================================
TooManyRedirects                               FailedPrecondition ("too many redirects")
InvalidURL, UnsupportedProtocol                InvalidArgument
ConnectError from a certificate that fails     FailedPrecondition ("TLS certificate
verification                                   verification failed")
ConnectError from any other TLS handshake      FailedPrecondition ("TLS handshake
failure (``WRONG_VERSION_NUMBER``: https://    failed")
to a plain-HTTP server, no shared protocol or
cipher, an alert from the server)
ConnectError from a host name that does not    FailedPrecondition ("host name does
resolve (``EAI_NONAME``/``EAI_NODATA``: a      not resolve")
typo, a name that does not exist)
ConnectError from a resolver that failed       Unavailable (the resolver may come back)
for now (``EAI_AGAIN``, ``EAI_FAIL``)
ConnectError "Connection refused"              Unavailable (a server restarting)
RemoteProtocolError "incomplete message body"  DataLoss (the prefix is kept for a resume)
RemoteProtocolError "bad Content-Length" or     FailedPrecondition ("malformed
"conflicting Content-Length headers" (a         Content-Length": the server is broken;
negative or non-numeric length)                 a retry gets the same answer)
TimeoutException                               Unavailable ("timed out")
anything else (connect, read, write,           Unavailable
protocol, a TLS connection closed mid-way)
=============================================  =========================================

TLS failures and names that do not resolve are permanent: retrying cannot fix a
certificate, a server that does not speak TLS or a mistyped host; trust a CA bundle,
fix the URL, or skip verification. Every
Unavailable carries details ``url`` and ``error`` (the exception's type name).

Status codes (:func:`status_kind`): 400 InvalidArgument, 401 Unauthenticated, 403
PermissionDenied, 404/410 NotFound, 405/501 Unimplemented, 416 OutOfRange,
408/429/500/502/503/504 Unavailable, any other 4xx InvalidArgument, anything else
(other 5xx, a 1xx or 3xx that reaches a caller) Unknown. The error of
:func:`status_error` carries details ``status``, ``method``, ``url`` and, when it is
Unavailable and the server sent ``Retry-After``, ``retry_after`` (seconds).

Slow bodies (:class:`LowSpeed`, curl's ``CURLOPT_LOW_SPEED_LIMIT``/``_TIME``): a body
that averages fewer than ``limit`` bytes/s over the last ``time`` seconds is
Unavailable ("slower than <limit> bytes/s over <time> s"), details ``url``, ``error``
(``LowSpeed``), ``limit`` and ``time``; a retry resumes. The rule is checked as bytes
arrive, so it fires within ``time`` plus one gap between two reads (a connection that
sends nothing at all is the read timeout's); the piece that arrived when it fired is
returned first and the error raised by the next read, so every byte received reaches
the caller.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import os
import re
import socket
import ssl
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from ingestq import errdefs
from ingestq.fetch.decoding import decoded, encoding_of
from ingestq.fetch.source import BytesStream, Opened
from ingestq.fetch.transport import READ_SIZE, RawBody
from ingestq.fetch.transport import transport as large_read_transport

#: The ``User-Agent`` of every request.
USER_AGENT = "ingestq"
#: Connections per client (one client serves every job of a process).
LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=16)

STATUS_KINDS: Mapping[int, type[errdefs.ErrdefsError]] = {
    400: errdefs.InvalidArgument,
    401: errdefs.Unauthenticated,
    403: errdefs.PermissionDenied,
    404: errdefs.NotFound,
    405: errdefs.Unimplemented,
    408: errdefs.Unavailable,
    410: errdefs.NotFound,
    416: errdefs.OutOfRange,
    429: errdefs.Unavailable,
    500: errdefs.Unavailable,
    501: errdefs.Unimplemented,
    502: errdefs.Unavailable,
    503: errdefs.Unavailable,
    504: errdefs.Unavailable,
}

# Matched with fullmatch only (``$`` would accept a trailing newline); ASCII digits only.
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.ASCII)
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)", re.ASCII)
#: TLS errors that mean "the connection went away", not "the handshake was refused".
_TLS_CONNECTION_LOST = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


# -- clients -----------------------------------------------------------------------------
class SystemTrustContext(ssl.SSLContext):
    """A client TLS context that verifies against the system's CAs, as
    ``ssl.create_default_context()`` does, but reads them at its first handshake
    instead of when it is made: parsing them costs ~18 ms, which a process that only
    speaks plain HTTP (a registry on ``http://``) never needs to pay. The first
    ``wrap_socket`` / ``wrap_bio`` loads them (once, under a lock), as the environment
    names them then (``SSL_CERT_FILE``, ``SSL_CERT_DIR``); until then the context
    trusts nothing, so nothing is ever accepted unverified. Its only protocol is
    ``PROTOCOL_TLS_CLIENT`` (TypeError for another)."""

    _trust_mutex = threading.Lock()
    _trusted = False

    def __new__(cls, protocol: int = ssl.PROTOCOL_TLS_CLIENT) -> SystemTrustContext:
        if protocol != ssl.PROTOCOL_TLS_CLIENT:
            raise TypeError(f"{cls.__name__} is a client context, not protocol {protocol}")
        return super().__new__(cls, protocol)

    def __init__(self, protocol: int = ssl.PROTOCOL_TLS_CLIENT) -> None:
        super().__init__()  # PROTOCOL_TLS_CLIENT: CERT_REQUIRED, host names checked
        if sys.version_info >= (3, 13):  # what create_default_context adds there
            self.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
        keylog = os.environ.get("SSLKEYLOGFILE")
        if keylog and not sys.flags.ignore_environment:
            self.keylog_filename = keylog

    def _load_trust(self) -> None:
        if self._trusted:  # set only once the load is complete
            return
        with SystemTrustContext._trust_mutex:
            if not self._trusted:
                self.load_default_certs(ssl.Purpose.SERVER_AUTH)
                self._trusted = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._load_trust()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._load_trust()
        return super().wrap_bio(*args, **kwargs)


def _new_trust_mutex() -> None:
    # A fork while another thread loads would leave the child's lock held for good.
    SystemTrustContext._trust_mutex = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_trust_mutex)


def ssl_context(
    *,
    ca_bundle: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    insecure_skip_verify: bool = False,
) -> ssl.SSLContext | bool:
    """The ``verify`` of :func:`new_client`: False to skip verification, else a context
    trusting ``ca_bundle`` (the system's CAs when None, read at the first handshake:
    :class:`SystemTrustContext`) with an optional client certificate. InvalidArgument
    for a file that cannot be read or is not PEM."""
    if insecure_skip_verify:
        return False
    if ca_bundle is None and not client_cert:
        return SystemTrustContext()
    try:
        ctx = ssl.create_default_context(cafile=ca_bundle)
        if client_cert:
            ctx.load_cert_chain(client_cert, client_key)
    except (OSError, ssl.SSLError) as e:
        raise errdefs.InvalidArgument(f"TLS configuration: {e}") from e
    return ctx


def new_client(
    *,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
    max_redirects: int = 10,
    verify: ssl.SSLContext | bool = True,
    auth: httpx.Auth | None = None,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """An httpx client for fetching: redirects followed up to ``max_redirects``, a
    connect and a read (stall) timeout, :data:`LIMITS`, ``auth`` on every request.

    ``verify`` True trusts the system's CAs, as a registry does (:func:`ssl_context`:
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` name others), not httpx's default (certifi's
    bundle): one trust for every source, read only once a TLS handshake needs it.

    ``transport`` None means the network through :mod:`ingestq.fetch.transport`
    (large socket reads), or through httpx's own transports when the environment names
    a proxy (``HTTPS_PROXY``, ...), so proxies keep working; tests pass their own.
    """
    if verify is True:
        verify = ssl_context()
    if transport is None and not urllib.request.getproxies():
        transport = large_read_transport(verify, LIMITS)
    return httpx.Client(
        auth=auth,
        verify=verify,
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        follow_redirects=True,
        max_redirects=max_redirects,
        limits=LIMITS,
        transport=transport,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        event_hooks={"response": [bound_small_body]},
    )


# -- small bodies ------------------------------------------------------------------------
#: The most bytes kept of a body that is not a 200's or a 206's (an error's text, a
#: redirect's or a challenge's): the rest is not read.
SMALL_BODY_MAX = 64 << 10
#: Seconds a small body may take to arrive, from its headers (then Unavailable).
SMALL_BODY_TIME = 60.0

_SMALL_BODY = "ingestq_small_body"


def small_body(limit: int, seconds: float | None = None) -> dict[str, Any]:
    """Request extensions marking its response's body as small: read at most
    ``limit + 1`` bytes of it (so a caller sees that it is longer than ``limit``), in at
    most ``seconds`` (default :data:`SMALL_BODY_TIME`)."""
    return {_SMALL_BODY: (limit, seconds)}


def bound_small_body(response: httpx.Response) -> None:
    """An httpx response hook (of :func:`new_client`'s clients): the body of a response
    that is not a 200 or a 206, or of a request marked with :func:`small_body`, is
    replaced by a bounded one (module docstring); a ``Content-Encoding`` is decoded by
    it, so httpx's own decoding never sees the body."""
    request = response.request
    ok = response.status_code in (200, 206)
    mark = request.extensions.get(_SMALL_BODY) if ok else None
    if mark is None and ok:
        return
    # The mark is for the body asked for; an error's, a challenge's or a redirect's is
    # only informative, whatever was asked.
    limit, seconds = mark if mark is not None else (SMALL_BODY_MAX - 1, None)
    seconds = SMALL_BODY_TIME if seconds is None else seconds
    encoding = response.headers.pop("content-encoding", "")
    what = f"{request.method} {request.url.copy_with(query=None)}"
    response.stream = _SmallBody(
        response.stream, request, limit + 1, seconds, encoding, what, strict=mark is not None
    )


class _SmallBody(httpx.SyncByteStream):
    """At most ``limit`` bytes of ``stream``, decoded from ``encoding``, within
    ``seconds`` (then httpx's ReadTimeout); the stream is closed once it has them.
    ``strict``: an encoding that cannot be decoded raises (Unimplemented, DataLoss);
    else the body is what could be read (an error's text only informs)."""

    def __init__(
        self,
        stream: httpx.SyncByteStream | httpx.AsyncByteStream,
        request: httpx.Request,
        limit: int,
        seconds: float,
        encoding: str,
        what: str,
        *,
        strict: bool,
    ) -> None:
        assert isinstance(stream, httpx.SyncByteStream)
        self._stream = stream
        self._request = request
        self._limit = limit
        self._deadline = time.monotonic() + seconds
        self._seconds = seconds
        self._encoding = encoding
        self._what = what
        self._strict = strict

    def __iter__(self) -> Iterator[bytes]:
        left = self._limit
        try:
            chunks: Iterator[bytes] = iter(self._timed())
            try:
                name = encoding_of(self._encoding)
                if name is not None:
                    chunks = decoded(chunks, name, min(left, READ_SIZE), self._what)
                for chunk in chunks:
                    yield chunk[:left]
                    left -= min(len(chunk), left)
                    if left <= 0:
                        return
            except errdefs.ErrdefsError:
                if self._strict:
                    raise
        finally:
            self._stream.close()

    def _timed(self) -> Iterator[bytes]:
        for chunk in self._stream:
            if time.monotonic() > self._deadline:
                raise httpx.ReadTimeout(
                    f"{self._what}: body took over {self._seconds:g} s", request=self._request
                )
            yield chunk

    def close(self) -> None:
        self._stream.close()


def send(
    client: httpx.Client,
    method: str,
    url: str,
    headers: Mapping[str, str],
    what: str,
    extensions: Mapping[str, Any] | None = None,
) -> httpx.Response:
    """Send one request with the body left streaming (the caller closes the response);
    ``extensions`` are the request's (:func:`small_body`). Transport failures raise
    :func:`transport_error`'s kinds."""
    try:
        request = client.build_request(
            method, url, headers=dict(headers), extensions=dict(extensions or {})
        )
        return client.send(request, stream=True)
    except httpx.HTTPError as e:
        raise transport_error(e, what) from e


# -- errors ------------------------------------------------------------------------------
def _tls_error(err: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


#: getaddrinfo errors meaning the name does not exist (retrying cannot help).
_NO_SUCH_NAME = frozenset(
    code
    for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
    if code is not None
)


def _no_such_name(err: BaseException) -> socket.gaierror | None:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, socket.gaierror) and seen.errno in _NO_SUCH_NAME:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _verify_message(err: ssl.SSLCertVerificationError) -> str:
    message = str(getattr(err, "verify_message", None) or err)
    if getattr(err, "verify_code", None) == _UNABLE_TO_GET_ISSUER and not _system_has_cas():
        message += (
            " (this system has no CA certificates: install its ca-certificates package,"
            " or name a bundle with SSL_CERT_FILE)"
        )
    return message


#: OpenSSL's X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: no trusted CA issued it.
_UNABLE_TO_GET_ISSUER = 20

#: The names OpenSSL looks certificates up by in a CA directory (``openssl rehash``).
_HASHED_NAME = re.compile(r"[0-9a-f]{8}\.r?[0-9]+")


def _system_has_cas() -> bool:
    """Whether OpenSSL's default paths (as ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` name them,
    the latter a list) hold a CA bundle or a hashed CA directory."""
    paths = ssl.get_default_verify_paths()
    if paths.cafile is not None:
        return True
    listed = os.environ.get(paths.openssl_capath_env)
    dirs = listed.split(os.pathsep) if listed else [paths.openssl_capath]
    return any(_has_hashed_entries(d) for d in dirs if d)


def _has_hashed_entries(directory: str) -> bool:
    try:
        with os.scandir(directory) as entries:
            return any(_HASHED_NAME.fullmatch(e.name) for e in entries)
    except OSError:
        return False


def transport_error(err: httpx.HTTPError, what: str) -> errdefs.ErrdefsError:
    """The errdefs error for an httpx exception (the table in the module docstring);
    ``what`` starts the message (e.g. ``"GET https://host/x"``)."""
    if isinstance(err, httpx.TooManyRedirects):
        return errdefs.FailedPrecondition(f"{what}: too many redirects: {err}")
    if isinstance(err, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return errdefs.InvalidArgument(f"{what}: {err}")
    if isinstance(err, httpx.ConnectError):
        tls = _tls_error(err)
        if isinstance(tls, ssl.SSLCertVerificationError):
            return errdefs.FailedPrecondition(
                f"{what}: TLS certificate verification failed: {_verify_message(tls)}"
            )
        if tls is not None and not isinstance(tls, _TLS_CONNECTION_LOST):
            hint = ""
            if getattr(tls, "reason", None) == "WRONG_VERSION_NUMBER":
                hint = " (does the server speak plain HTTP? use http://)"
            return errdefs.FailedPrecondition(f"{what}: TLS handshake failed: {tls}{hint}")
        unresolved = _no_such_name(err)
        if unresolved is not None:
            return errdefs.FailedPrecondition(
                f"{what}: host name does not resolve: {unresolved.strerror}"
            )
    if isinstance(err, httpx.RemoteProtocolError) and "complete message body" in str(err):
        return errdefs.DataLoss(f"{what}: body shorter than announced: {err}")
    if isinstance(err, httpx.RemoteProtocolError) and "Content-Length" in str(err):
        return errdefs.FailedPrecondition(f"{what}: malformed Content-Length from server: {err}")
    try:
        url = str(err.request.url)
    except RuntimeError:
        url = ""
    details = {"url": url, "error": type(err).__name__}
    if isinstance(err, httpx.TimeoutException):
        return errdefs.Unavailable(f"{what}: timed out: {type(err).__name__}", details)
    return errdefs.Unavailable(f"{what}: {type(err).__name__}: {err}".rstrip(": "), details)


def status_kind(status: int) -> type[errdefs.ErrdefsError]:
    """The errdefs kind of an HTTP status that is not a success (module docstring)."""
    kind = STATUS_KINDS.get(status)
    if kind is not None:
        return kind
    return errdefs.InvalidArgument if 400 <= status < 500 else errdefs.Unknown


def status_error(
    response: httpx.Response,
    what: str,
    *,
    kind: type[errdefs.ErrdefsError] | None = None,
    summary: str | None = None,
    details: Mapping[str, str] | None = None,
) -> errdefs.ErrdefsError:
    """The error for a response that failed: ``<what>: HTTP <status> <summary>``.

    Args:
        response: the response (its body is not read here).
        what: the start of the message (e.g. ``"GET https://host/x"``).
        kind: the kind; None means :func:`status_kind` of the status.
        summary: the end of the message; None means the reason phrase.
        details: added to the details ``status``, ``method``, ``url``, ``retry_after``.
    """
    status = response.status_code
    kind = kind or status_kind(status)
    text = response.reason_phrase if summary is None else summary
    out = {"status": str(status), "method": "", "url": ""}
    with contextlib.suppress(RuntimeError):  # a response built by hand has no request
        out["method"], out["url"] = response.request.method, str(response.request.url)
    if kind is errdefs.Unavailable:
        after = retry_after(response.headers.get("Retry-After"))
        if after is not None:
            out["retry_after"] = f"{after:g}"
    out.update(details or {})
    return kind(f"{what}: HTTP {status} {text}".rstrip(), out)


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date (a
    date in the past is 0). None when there is no value or it is neither."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


# -- slow bodies -------------------------------------------------------------------------
@dataclass(frozen=True)
class LowSpeed:
    """curl's low-speed rule: a body averaging fewer than ``limit`` bytes/s over the
    last ``time`` seconds is Unavailable. ``limit`` or ``time`` 0 disables it."""

    limit: int = 1024
    time: float = 60.0

    @property
    def enabled(self) -> bool:
        """Whether the rule applies (both ``limit`` and ``time`` are positive)."""
        return self.limit > 0 and self.time > 0


#: The rule switched off.
NO_LOW_SPEED = LowSpeed(0, 0.0)
#: The rule's defaults (1024 bytes/s over 60 s), those of the sources.
DEFAULT_LOW_SPEED = LowSpeed()


class _SpeedMeter:
    """Bytes received over a sliding window of ``rule.time`` seconds, from samples
    taken at most every ``time / 16`` s (so its memory stays small at any speed)."""

    def __init__(self, rule: LowSpeed, now: float) -> None:
        self._rule = rule
        self._step = rule.time / 16
        self._samples: deque[tuple[float, int]] = deque([(now, 0)])

    def too_slow(self, received: int, now: float) -> tuple[int, float] | None:
        """``(bytes, seconds)`` of a full window that ran below the limit, else None."""
        samples, boundary = self._samples, now - self._rule.time
        if now - samples[-1][0] >= self._step:
            samples.append((now, received))
        while len(samples) > 1 and samples[1][0] <= boundary:
            samples.popleft()
        since, then = samples[0]
        if since > boundary:
            return None  # less than one window of history yet
        window = now - since
        got = received - then
        return (got, window) if got < self._rule.limit * window else None


# -- ranged GETs -------------------------------------------------------------------------
def range_headers(offset: int, if_range: str | None = None) -> dict[str, str]:
    """Headers of a GET for the bytes from ``offset``: ``Accept-Encoding: identity`` (the
    bytes are the resource, not a transfer encoding of it), and for ``offset > 0``
    ``Range: bytes=<offset>-`` plus ``If-Range`` when a validator is given."""
    headers = {"Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
        if if_range:
            headers["If-Range"] = if_range
    return headers


def conditional_headers(etag: str | None, last_modified: str | None) -> dict[str, str]:
    """Headers that make a GET answer ``304 Not Modified`` while the resource still
    matches: ``If-None-Match`` for an ETag, ``If-Modified-Since`` for a Last-Modified
    (a server that knows both honours the ETag, RFC 9110)."""
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    return headers


@dataclass(frozen=True)
class Ranged:
    """What :func:`open_range` opened, and the response that answered (its headers:
    ``ETag``, ``Last-Modified``, ...)."""

    opened: Opened
    response: httpx.Response


def open_range(
    get: Callable[[int], httpx.Response],
    offset: int,
    what: str,
    *,
    fail: Callable[[httpx.Response], errdefs.ErrdefsError] | None = None,
    decode: bool = False,
    low_speed: LowSpeed = NO_LOW_SPEED,
) -> Ranged:
    """Open the bytes from ``offset`` with ``get(offset)``, a GET sent with
    :func:`range_headers` (containerd's rules):

    * ``200``: the whole resource; the stream starts at 0 (the server ignored the
      range, or ``If-Range`` no longer matched), ``size`` is ``Content-Length``.
    * ``206``: only for ``offset > 0``, and ``Content-Range`` must read
      ``bytes <offset>-<last>/<total|*>`` agreeing with ``Content-Length``; otherwise
      FailedPrecondition ("unhandled content range"). The stream starts at ``offset``;
      ``size`` is the total (None for ``*``).
    * ``416`` for ``offset > 0`` (its body is never read: some servers announce a
      length they do not send): ``Content-Range: bytes */<offset>`` means nothing is
      left, an empty stream at ``offset`` of size ``offset``; anything else means the
      offset is past the end, and the resource is opened again from 0.
    * anything else: ``fail(response)`` is raised (default :func:`status_error`).

    ``decode`` (registries): a body sent with a ``Content-Encoding`` is decoded, and
    its size is then unknown; without it the raw bytes are the resource.
    ``low_speed``: the body stream's rule (:class:`BodyStream`).
    """
    response = get(offset)
    try:
        return _ranged(get, response, offset, what, fail, decode, low_speed)
    except BaseException:
        response.close()
        raise


def _ranged(
    get: Callable[[int], httpx.Response],
    response: httpx.Response,
    offset: int,
    what: str,
    fail: Callable[[httpx.Response], errdefs.ErrdefsError] | None,
    decode: bool,
    low_speed: LowSpeed,
) -> Ranged:
    code = response.status_code
    decoded = decode and _encoded(response)
    length = None if decoded else int_header(response, "Content-Length")
    if code == 200:
        stream = BodyStream(response, what, length, decode=decode, low_speed=low_speed)
        return Ranged(Opened(stream, 0, length), response)
    if code == 206:
        if offset == 0:
            raise errdefs.FailedPrecondition(f"{what}: partial content without a range request")
        content_range = response.headers.get("Content-Range", "")
        m = _CONTENT_RANGE.fullmatch(content_range.strip())
        if m is None or int(m.group(1)) != offset:
            raise errdefs.FailedPrecondition(
                f"{what}: unhandled content range in response: {content_range!r} for a "
                f"request from offset {offset}"
            )
        first, last = int(m.group(1)), int(m.group(2))
        if last < first or (length is not None and length != last - first + 1):
            raise errdefs.FailedPrecondition(
                f"{what}: content range {content_range!r} disagrees with Content-Length {length}"
            )
        total = int(m.group(3)) if m.group(3) != "*" else None
        expect = None if decoded else last - first + 1
        stream = BodyStream(response, what, expect, decode=decode, low_speed=low_speed)
        return Ranged(Opened(stream, offset, total), response)
    if code == 416 and offset > 0:
        m = _UNSATISFIED_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        response.close()
        if m is not None and int(m.group(1)) == offset:
            return Ranged(Opened(BytesStream(b""), offset, offset), response)
        return open_range(get, 0, what, fail=fail, decode=decode, low_speed=low_speed)
    raise fail(response) if fail is not None else status_error(response, what)


def _encoded(response: httpx.Response) -> bool:
    return response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")


def int_header(response: httpx.Response, name: str) -> int | None:
    """Header ``name`` as a natural number; None when it is missing or not ASCII digits
    (``str.isdigit`` alone admits digits of other scripts, which ``int`` refuses)."""
    value = response.headers.get(name, "")
    return int(value) if value.isascii() and value.isdigit() else None


#: Bodies at least this large skip h11 (:class:`BodyStream`); a smaller one keeps its
#: connection reusable.
RAW_BODY_MIN = 1 << 20


class BodyStream:
    """A response body as a :class:`~ingestq.fetch.source.Stream`.

    Each read returns what the connection delivered (up to the transport's read size),
    so progress and cancellation never wait for a large buffer to fill. The raw bytes
    are returned, or with ``decode`` the decoded ones when the server applied a
    ``Content-Encoding``. A body that ends before ``expect`` bytes is DataLoss;
    failures mid-body are :func:`transport_error`'s kinds (a timeout Unavailable, a
    connection closed early DataLoss); a body slower than ``low_speed`` allows is
    Unavailable (module docstring). Reads of ``n >= 0`` return every byte received
    before a failure is raised, so a caller that writes what it reads keeps them all.

    A raw ``Content-Length`` body of at least :data:`RAW_BODY_MIN` bytes of a GET on
    :mod:`ingestq.fetch.transport`'s connections is read straight from the socket
    (:class:`~ingestq.fetch.transport.RawBody`: no copies in h11), with the same errors.
    """

    def __init__(
        self,
        response: httpx.Response,
        what: str,
        expect: int | None,
        *,
        decode: bool = False,
        low_speed: LowSpeed = NO_LOW_SPEED,
    ) -> None:
        self._response = response
        self._what = what
        self._raw, self._left = self._raw_body(response, decode)
        encoding = encoding_of(response.headers.get("content-encoding", "")) if decode else None
        self._chunks: Iterator[bytes] = (
            iter(())
            if self._raw is not None
            else decoded(response.iter_raw(), encoding, READ_SIZE, what)
            if encoding is not None
            else response.iter_raw()
        )
        self._buffer = b""
        self._expect = expect
        self._got = 0
        self._done = False
        self._low_speed = low_speed
        self._meter = _SpeedMeter(low_speed, time.monotonic()) if low_speed.enabled else None
        self._error: errdefs.ErrdefsError | None = None

    @staticmethod
    def _raw_body(response: httpx.Response, decode: bool) -> tuple[RawBody | None, int]:
        """The connection to read ``response``'s body from directly, and its length; or
        None when the body goes through httpx (not a plain Content-Length body of a GET,
        small, decoded, or a connection that does not offer it)."""
        stream = response.extensions.get("network_stream")
        length = int_header(response, "content-length")
        if (
            not isinstance(stream, RawBody)
            or length is None
            or length < RAW_BODY_MIN
            or (decode and _encoded(response))
            or "transfer-encoding" in response.headers
            or response.request.method != "GET"
            or response.status_code not in (200, 206)
            or response.http_version != "HTTP/1.1"
        ):
            return None, 0
        return (stream, length) if stream.claim() else (None, 0)

    def _raw_next(self, raw: RawBody) -> bytes | None:
        """The next piece of a directly read body (None at its end); failures as httpx's
        would be (a peer that closes early: the "incomplete body" DataLoss)."""
        if self._left <= 0:
            return None
        request = self._response.request
        timeout = request.extensions.get("timeout", {}).get("read")
        try:
            chunk = raw.read_body(min(self._left, READ_SIZE), timeout)
        except httpcore.TimeoutException as e:
            raise httpx.ReadTimeout(str(e), request=request) from e
        except httpcore.NetworkError as e:
            raise httpx.ReadError(str(e), request=request) from e
        if not chunk:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body "
                f"(received {self._got} bytes, expected {self._got + self._left})",
                request=request,
            )
        self._left -= len(chunk)
        return chunk

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes (the rest of the body for ``n < 0``); ``b""`` at the end."""
        if n < 0:
            parts = [self._buffer]
            self._buffer = b""
            while chunk := self._next():
                parts.append(chunk)
            out = b"".join(parts)
        else:
            if not self._buffer:
                self._buffer = self._next()
            if n >= len(self._buffer):
                out, self._buffer = self._buffer, b""
            else:
                out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def _fail(self, error: errdefs.ErrdefsError) -> errdefs.ErrdefsError:
        self._done = True
        self._response.close()
        return error

    def _next(self) -> bytes:
        if self._error is not None:
            error, self._error = self._error, None
            raise self._fail(error)
        if self._done:
            return b""
        while True:
            try:
                if self._raw is not None:
                    chunk = self._raw_next(self._raw)
                else:
                    chunk = next(self._chunks, None)
            except httpx.HTTPError as e:
                raise self._fail(transport_error(e, self._what)) from e
            except errdefs.ErrdefsError as e:  # the decoding's (DataLoss, Unimplemented)
                raise self._fail(e) from None
            if chunk is None:
                self._done = True
                if self._expect is not None and self._got < self._expect:
                    raise errdefs.DataLoss(
                        f"{self._what}: body ended after {self._got} of {self._expect} bytes"
                    )
                return b""
            if chunk:
                self._got += len(chunk)
                self._check_speed()
                return chunk

    def _check_speed(self) -> None:
        """Arm the low-speed error (raised by the next read, after this chunk)."""
        if self._meter is None:
            return
        slow = self._meter.too_slow(self._got, time.monotonic())
        if slow is None:
            return
        got, window = slow
        rule = self._low_speed
        try:
            url = str(self._response.request.url)
        except RuntimeError:
            url = ""
        self._error = errdefs.Unavailable(
            f"{self._what}: transfer slower than {rule.limit} bytes/s over {rule.time:g} s "
            f"(low-speed limit): {got} bytes in the last {window:.1f} s",
            {"url": url, "error": "LowSpeed", "limit": str(rule.limit), "time": f"{rule.time:g}"},
        )

    def close(self) -> None:
        """Close the response (and its connection, if the body was not read to the end)."""
        self._response.close()


__all__ = [
    "DEFAULT_LOW_SPEED",
    "LIMITS",
    "NO_LOW_SPEED",
    "RAW_BODY_MIN",
    "SMALL_BODY_MAX",
    "SMALL_BODY_TIME",
    "STATUS_KINDS",
    "USER_AGENT",
    "BodyStream",
    "LowSpeed",
    "Ranged",
    "bound_small_body",
    "conditional_headers",
    "new_client",
    "open_range",
    "range_headers",
    "retry_after",
    "send",
    "small_body",
    "ssl_context",
    "status_error",
    "status_kind",
    "transport_error",
]
