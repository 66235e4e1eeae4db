"""The one HTTP layer: the Retry-After parser, the status and exception tables, and the
ranged GET's answers to what servers really send (through httpx's transport seam; the
sources' tests run the same code against real servers)."""

from __future__ import annotations

import email.utils
import gzip
import ssl
from collections.abc import Callable

import httpx
import pytest

from ingestq import errdefs
from ingestq.fetch import httpio

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(value: str | None, seconds: float | None) -> None:
    assert httpio.retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, errdefs.InvalidArgument),
        (401, errdefs.Unauthenticated),
        (403, errdefs.PermissionDenied),
        (404, errdefs.NotFound),
        (405, errdefs.Unimplemented),
        (408, errdefs.Unavailable),
        (409, errdefs.InvalidArgument),
        (410, errdefs.NotFound),
        (416, errdefs.OutOfRange),
        (429, errdefs.Unavailable),
        (500, errdefs.Unavailable),
        (501, errdefs.Unimplemented),
        (502, errdefs.Unavailable),
        (503, errdefs.Unavailable),
        (504, errdefs.Unavailable),
        (505, errdefs.Unknown),
        (304, errdefs.Unknown),
    ],
)
def test_one_status_table(status: int, kind: type[errdefs.ErrdefsError]) -> None:
    assert httpio.status_kind(status) is kind


def test_status_errors_carry_the_evidence_and_retry_after_only_when_retryable() -> None:
    request = httpx.Request("GET", "https://h/x")
    busy = httpx.Response(429, headers={"Retry-After": "9"}, request=request)
    error = httpio.status_error(busy, "GET https://h/x")
    assert isinstance(error, errdefs.Unavailable)
    assert str(error).startswith("GET https://h/x: HTTP 429 Too Many Requests")
    assert error.details == {
        "status": "429", "method": "GET", "url": "https://h/x", "retry_after": "9",
    }  # fmt: skip
    gone = httpx.Response(410, headers={"Retry-After": "9"}, request=request)
    assert "retry_after" not in httpio.status_error(gone, "x").details
    by_hand = httpio.status_error(httpx.Response(503), "x", summary="down", details={"k": "v"})
    assert by_hand.details["k"] == "v" and "HTTP 503 down" in str(by_hand)


def _raised(inner: BaseException, outer: Callable[[str], httpx.HTTPError]) -> httpx.HTTPError:
    try:
        try:
            raise inner
        except BaseException as e:
            raise outer("boom") from e
    except httpx.HTTPError as e:
        return e


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (httpx.TooManyRedirects("loop"), errdefs.FailedPrecondition, "too many redirects"),
        (httpx.InvalidURL("bad"), errdefs.InvalidArgument, "bad"),
        (httpx.UnsupportedProtocol("ftp"), errdefs.InvalidArgument, "ftp"),
        (
            _raised(ssl.SSLCertVerificationError(1, "unknown ca"), httpx.ConnectError),
            errdefs.FailedPrecondition,
            "TLS certificate verification failed",
        ),
        (
            _raised(ssl.SSLError(1, "[SSL] no shared cipher"), httpx.ConnectError),
            errdefs.FailedPrecondition,
            "TLS handshake failed",
        ),
        (
            _raised(ssl.SSLEOFError(8, "EOF in violation of protocol"), httpx.ConnectError),
            errdefs.Unavailable,
            "ConnectError",
        ),
        (
            _raised(ssl.SSLError(1, "bad record mac"), httpx.ReadError),
            errdefs.Unavailable,
            "ReadError",
        ),
        (
            httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body"
            ),
            errdefs.DataLoss,
            "shorter than announced",
        ),
        (
            httpx.RemoteProtocolError("bad Content-Length"),
            errdefs.FailedPrecondition,
            "malformed Content-Length",
        ),
        (
            httpx.RemoteProtocolError("conflicting Content-Length headers"),
            errdefs.FailedPrecondition,
            "malformed Content-Length",
        ),
        (httpx.ReadTimeout("slow"), errdefs.Unavailable, "timed out: ReadTimeout"),
        (httpx.ConnectError("refused"), errdefs.Unavailable, "ConnectError: refused"),
    ],
)
def test_one_exception_table(
    error: httpx.HTTPError, kind: type[errdefs.ErrdefsError], message: str
) -> None:
    mapped = httpio.transport_error(error, "GET https://h/x")
    assert type(mapped) is kind and message in str(mapped)
    if kind is errdefs.Unavailable:
        assert mapped.details["error"] == type(error).__name__


class _Canned(httpx.BaseTransport):
    """Answers with ``handler``'s response, its body unread (as from the network)."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self._handler = handler

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._handler(request)


def _get(handler: Callable[[httpx.Request], httpx.Response]) -> Callable[[int], httpx.Response]:
    client = httpx.Client(transport=_Canned(handler))

    def get(offset: int) -> httpx.Response:
        headers = httpio.range_headers(offset, '"v1"')
        return httpio.send(client, "GET", "http://h/x", headers, "GET http://h/x")

    return get


DATA = bytes(range(256)) * 40


def _serve(status: int, body: bytes, **headers: str) -> Callable[[int], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        head = {"Content-Length": str(len(body)), **headers}
        return httpx.Response(status, headers=head, stream=httpx.ByteStream(body))

    return _get(handler)


def test_range_headers_ask_for_identity_bytes_and_guard_a_resume() -> None:
    assert httpio.range_headers(0, '"v1"') == {"Accept-Encoding": "identity"}
    assert httpio.range_headers(5) == {"Accept-Encoding": "identity", "Range": "bytes=5-"}
    assert httpio.range_headers(5, '"v1"')["If-Range"] == '"v1"'


def test_a_200_is_the_whole_resource_and_a_206_the_rest() -> None:
    whole = httpio.open_range(_serve(200, DATA), 100, "x").opened
    assert (whole.start, whole.size, whole.stream.read(-1)) == (0, len(DATA), DATA)
    rest = DATA[100:]
    cr = f"bytes 100-{len(DATA) - 1}/{len(DATA)}"
    part = httpio.open_range(_serve(206, rest, **{"Content-Range": cr}), 100, "x").opened
    assert (part.start, part.size, part.stream.read(-1)) == (100, len(DATA), rest)
    unknown = f"bytes 100-{len(DATA) - 1}/*"
    star = httpio.open_range(_serve(206, rest, **{"Content-Range": unknown}), 100, "x").opened
    assert (star.start, star.size) == (100, None)


@pytest.mark.parametrize(
    ("offset", "content_range", "message"),
    [
        (0, "bytes 0-9/10", "partial content without a range request"),
        (100, "", "unhandled content range"),
        (100, "bytes 101-200/300", "unhandled content range"),
        (100, "bytes 100-99/300", "disagrees"),
        (100, "items 100-199/300", "unhandled content range"),
    ],
)
def test_a_206_that_does_not_answer_the_range_is_failed_precondition(
    offset: int, content_range: str, message: str
) -> None:
    get = _serve(206, b"x" * 100, **({"Content-Range": content_range} if content_range else {}))
    with pytest.raises(errdefs.FailedPrecondition, match=message):
        httpio.open_range(get, offset, "x")


def test_a_416_at_the_end_is_empty_and_past_the_end_starts_over() -> None:
    calls: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("Range"))
        if "Range" in request.headers:
            return httpx.Response(416, headers={"Content-Range": f"bytes */{len(DATA)}"})
        return httpx.Response(200, stream=httpx.ByteStream(DATA))

    at_end = httpio.open_range(_get(handler), len(DATA), "x").opened
    assert (at_end.start, at_end.size, at_end.stream.read(10)) == (len(DATA), len(DATA), b"")
    past = httpio.open_range(_get(handler), len(DATA) + 5, "x").opened
    assert (past.start, past.stream.read(-1)) == (0, DATA)
    assert calls == [f"bytes={len(DATA)}-", f"bytes={len(DATA) + 5}-", None]


def test_other_statuses_raise_the_callers_error() -> None:
    with pytest.raises(errdefs.NotFound, match="HTTP 404"):
        httpio.open_range(_serve(404, b"no"), 0, "GET http://h/x")
    with pytest.raises(errdefs.Aborted, match="mine"):
        httpio.open_range(_serve(404, b"no"), 0, "x", fail=lambda r: errdefs.Aborted("mine"))


def test_the_body_stream_reads_pieces_and_reports_a_short_body() -> None:
    opened = httpio.open_range(_serve(200, DATA), 0, "x").opened
    got = opened.stream.read(7) + opened.stream.read(1)
    while piece := opened.stream.read(1000):
        assert len(piece) <= 1000
        got += piece
    assert got == DATA and opened.stream.read(1) == b""
    opened.stream.close()
    opened.stream.close()
    cr = f"bytes 100-{len(DATA) - 1}/{len(DATA)}"

    def short(request: httpx.Request) -> httpx.Response:
        body = httpx.ByteStream(DATA[100:200])
        return httpx.Response(206, headers={"Content-Range": cr}, stream=body)

    part = httpio.open_range(_get(short), 100, "x").opened
    with pytest.raises(errdefs.DataLoss, match="body ended after 100 of"):
        part.stream.read(-1)


def test_decoding_is_for_registries_only() -> None:
    packed = gzip.compress(DATA)
    get = _serve(200, packed, **{"Content-Encoding": "gzip"})
    raw = httpio.open_range(get, 0, "x").opened
    assert (raw.size, raw.stream.read(-1)) == (len(packed), packed)
    decoded = httpio.open_range(get, 0, "x", decode=True).opened
    assert (decoded.size, decoded.stream.read(-1)) == (None, DATA)


@pytest.mark.parametrize("value", ["\u00b2", "1\u00b3", "", "-1", "1.5", " 7"])
def test_a_numeric_header_is_ascii_digits_or_nothing(value: str) -> None:
    """``str.isdigit`` admits superscripts (latin-1, so valid in a header) that ``int``
    refuses; such a header reads as absent instead of raising ValueError."""
    response = httpx.Response(200, headers={"Content-Length": value.encode("latin-1")})
    assert httpio.int_header(response, "Content-Length") is None


def test_a_numeric_header_of_ascii_digits_is_its_value() -> None:
    response = httpx.Response(200, headers={"Retry-After": "120"})
    assert httpio.int_header(response, "Retry-After") == 120


def test_a_name_that_does_not_resolve_is_permanent_and_a_refused_connection_is_not() -> None:
    """A real resolver on the reserved ``.invalid`` domain, a real closed port."""
    with httpx.Client() as client:
        with pytest.raises(httpx.ConnectError) as unresolved:
            client.get("http://no-such-host.invalid/x")
        with pytest.raises(httpx.ConnectError) as refused:
            client.get("http://127.0.0.1:1/x")
    err = httpio.transport_error(unresolved.value, "GET http://no-such-host.invalid/x")
    assert isinstance(err, errdefs.FailedPrecondition)
    assert "host name does not resolve" in str(err)
    assert isinstance(httpio.transport_error(refused.value, "GET"), errdefs.Unavailable)
