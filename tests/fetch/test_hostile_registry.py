"""A hostile registry on 127.0.0.1 against the registry client: compressed bombs,
endless and trickling bodies, on manifests, errors, redirects and token responses. Each
is refused or cut off promptly with its kind, holding little memory."""

from __future__ import annotations

import gzip
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from ingestq import errdefs
from ingestq.fetch import httpio
from ingestq.fetch.reference import parse_reference
from ingestq.fetch.registry import client as registry_client
from ingestq.fetch.registry.client import RegistryClient
from ingestq.store.digest import Digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

#: 256 MiB of zeros, gzip-compressed (about 250 KiB on the wire).
BOMB = gzip.compress(b"\0" * (256 << 20), compresslevel=9)


class Hostile:
    """A loopback HTTP server answering each path with a handler of the test's; counts
    the bytes it managed to send per path."""

    def __init__(self, routes: dict[str, Callable[[BaseHTTPRequestHandler], None]]) -> None:
        self.sent: dict[str, int] = {}
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                hostile._dispatch(self)

            def do_HEAD(self) -> None:
                hostile._dispatch(self)

        self.routes = routes
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?")[0]
        route = self.routes.get(f"{h.command} {path}")
        if route is None:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        try:
            route(h)
        except OSError:
            h.close_connection = True  # the client went away

    def stream(self, h: BaseHTTPRequestHandler, key: str, chunks: Iterator[bytes]) -> None:
        """Send ``chunks`` as a chunked body, counting what got out."""
        for chunk in chunks:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            h.wfile.flush()
            self.sent[key] = self.sent.get(key, 0) + len(chunk)
        h.wfile.write(b"0\r\n\r\n")

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def hostile() -> Iterator[Callable[..., Hostile]]:
    servers: list[Hostile] = []

    def make(routes: dict[str, Callable[[BaseHTTPRequestHandler], None]]) -> Hostile:
        servers.append(Hostile(routes))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def _manifest_head(h: BaseHTTPRequestHandler) -> None:
    """200 to HEAD without a digest: the client GETs the manifest."""
    h.send_response(200)
    h.send_header("Content-Type", OCI_MANIFEST)
    h.send_header("Content-Length", "0")
    h.end_headers()


def _headers(h: BaseHTTPRequestHandler, status: int, **headers: str) -> None:
    h.send_response(status)
    for name, value in headers.items():
        h.send_header(name.replace("_", "-"), value)
    h.end_headers()


def _peak(call: Callable[[], object]) -> tuple[BaseException | None, int]:
    """What ``call`` raised, and the most memory Python held meanwhile (bytes)."""
    tracemalloc.start()
    try:
        call()
    except BaseException as e:
        error: BaseException | None = e
    else:
        error = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


def test_a_compressed_manifest_bomb_is_refused_holding_little_memory(
    hostile: Callable[..., Hostile],
) -> None:
    """A 250 KiB gzip body that inflates to 256 MiB, against an `Accept-Encoding:
    identity` request: decoded a piece at a time and refused at the 4 MiB manifest
    limit. httpx's own decoding would inflate each received chunk whole."""

    def bomb(h: BaseHTTPRequestHandler) -> None:
        assert h.headers["Accept-Encoding"] == "identity"
        _headers(h, 200, Content_Type=OCI_MANIFEST, Content_Encoding="gzip",
                 Content_Length=str(len(BOMB)))  # fmt: skip
        h.wfile.write(BOMB)

    server = hostile({"HEAD /v2/app/manifests/v1": _manifest_head,
                      "GET /v2/app/manifests/v1": bomb})  # fmt: skip
    with RegistryClient() as client:
        error, peak = _peak(lambda: client.resolve(parse_reference(f"{server.host}/app:v1")))
    assert isinstance(error, errdefs.ResourceExhausted), error
    assert "manifest exceeds" in str(error)
    assert peak < 32 << 20, f"{peak >> 20} MiB held"


def test_two_encodings_of_a_manifest_are_unimplemented(hostile: Callable[..., Hostile]) -> None:
    """``gzip, gzip`` would square the expansion: refused before a byte is decoded."""

    def double(h: BaseHTTPRequestHandler) -> None:
        body = gzip.compress(BOMB)
        _headers(h, 200, Content_Type=OCI_MANIFEST, Content_Encoding="gzip, gzip",
                 Content_Length=str(len(body)))  # fmt: skip
        h.wfile.write(body)

    server = hostile({"HEAD /v2/app/manifests/v1": _manifest_head,
                      "GET /v2/app/manifests/v1": double})  # fmt: skip
    with RegistryClient() as client, pytest.raises(errdefs.Unimplemented, match="gzip, gzip"):
        client.resolve(parse_reference(f"{server.host}/app:v1"))


def _endless(server_key: str, status: int, **headers: str) -> Callable[..., Callable[..., None]]:
    def route(server: Hostile) -> Callable[[BaseHTTPRequestHandler], None]:
        def answer(h: BaseHTTPRequestHandler) -> None:
            _headers(h, status, Transfer_Encoding="chunked", **headers)
            server.stream(h, server_key, iter(lambda: b"x" * 65536, b""))

        return answer

    return route


@pytest.mark.parametrize(
    ("status", "headers", "kind"),
    [
        (404, {"Content-Type": "application/json"}, errdefs.NotFound),
        (401, {"WWW-Authenticate": 'Basic realm="x"'}, errdefs.Unauthenticated),
        (307, {"Location": "/v2/app/manifests/elsewhere"}, None),
    ],
    ids=["error", "challenge", "redirect"],
)
def test_an_endless_error_challenge_or_redirect_body_is_cut_short(
    hostile: Callable[..., Hostile],
    status: int,
    headers: dict[str, str],
    kind: type[errdefs.ErrdefsError] | None,
) -> None:
    """httpx reads a redirect's and a challenge's body whole itself, and the error
    mapping read the error's: each is read to 64 KiB, then the connection is dropped."""
    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
    server = hostile(routes)
    extra = {k.replace("-", "_"): v for k, v in headers.items()}
    # A HEAD answers without a body (one sent anyway would be read as the next
    # response on the connection: a protocol error, Unavailable).
    routes["HEAD /v2/app/manifests/v1"] = lambda h: _headers(h, status, Content_Length="0", **extra)
    routes["GET /v2/app/manifests/v1"] = _endless("get", status, **extra)(server)
    routes["HEAD /v2/app/manifests/elsewhere"] = lambda h: _headers(h, 404, Content_Length="0")
    routes["GET /v2/app/manifests/elsewhere"] = _endless("get2", 404)(server)
    with RegistryClient() as client:
        error, peak = _peak(lambda: client.resolve(parse_reference(f"{server.host}/app:v1")))
    assert isinstance(error, kind or errdefs.NotFound), error
    assert peak < 32 << 20, f"{peak >> 20} MiB held"
    # What the server got out before the client hung up: socket buffers, not the body.
    assert all(n < 64 << 20 for n in server.sent.values()), server.sent


def test_a_trickling_manifest_is_unavailable_after_its_time(
    hostile: Callable[..., Hostile], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One byte every 50 ms never trips the read timeout; the manifest's own bound
    does (``MANIFEST_TIME``, 1 s here)."""
    monkeypatch.setattr(registry_client, "MANIFEST_TIME", 1.0)

    def trickle(h: BaseHTTPRequestHandler) -> None:
        _headers(h, 200, Content_Type=OCI_MANIFEST, Transfer_Encoding="chunked")
        for _ in range(2000):
            h.wfile.write(b"1\r\n{\r\n")
            h.wfile.flush()
            time.sleep(0.05)
        h.wfile.write(b"0\r\n\r\n")

    server = hostile({"HEAD /v2/app/manifests/v1": _manifest_head,
                      "GET /v2/app/manifests/v1": trickle})  # fmt: skip
    started = time.monotonic()
    with RegistryClient() as client, pytest.raises(errdefs.Unavailable, match="timed out"):
        client.resolve(parse_reference(f"{server.host}/app:v1"))
    assert time.monotonic() - started < 30, "the bound did not end it"


def test_an_endless_token_response_is_refused(
    hostile: Callable[..., Hostile], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token endpoint that answers 200 with a body that never ends: read to the token
    limit (1 MiB here through the mark), then ResourceExhausted."""
    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
    server = hostile(routes)

    def challenge(h: BaseHTTPRequestHandler) -> None:
        realm = f"http://{server.host}/token"
        _headers(h, 401, Content_Length="0", WWW_Authenticate=f'Bearer realm="{realm}"')

    routes["HEAD /v2/app/manifests/v1"] = challenge
    routes["GET /token"] = _endless("token", 200, Content_Type="application/json")(server)
    with RegistryClient() as client:
        error, peak = _peak(lambda: client.resolve(parse_reference(f"{server.host}/app:v1")))
    assert isinstance(error, errdefs.ResourceExhausted), error
    assert "token request" in str(error)
    assert peak < 32 << 20, f"{peak >> 20} MiB held"


def test_small_bodies_are_marked_for_every_client() -> None:
    """Every client of :func:`httpio.new_client` asks for identity and bounds small
    bodies (the hook is the client's, so proxies' transports have it too)."""
    with httpio.new_client() as client:
        assert client.headers["Accept-Encoding"] == "identity"
        assert httpio.bound_small_body in client.event_hooks["response"]


def test_a_malformed_digest_header_is_ignored_and_the_manifest_hashed(
    hostile: Callable[..., Hostile],
) -> None:
    """A HEAD whose ``Docker-Content-Digest`` is not a digest: the manifest is fetched
    and hashed instead (it was InvalidArgument, a permanent failure for a server's
    typo)."""
    body = b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'"}'

    def head(h: BaseHTTPRequestHandler) -> None:
        _headers(h, 200, Content_Type=OCI_MANIFEST, Content_Length=str(len(body)),
                 Docker_Content_Digest="sha256:zz")  # fmt: skip

    def get(h: BaseHTTPRequestHandler) -> None:
        _headers(h, 200, Content_Type=OCI_MANIFEST, Content_Length=str(len(body)))
        h.wfile.write(body)

    server = hostile({"HEAD /v2/app/manifests/v1": head, "GET /v2/app/manifests/v1": get})
    with RegistryClient() as client:
        desc = client.resolve(parse_reference(f"{server.host}/app:v1"))
    assert desc.digest == Digest.from_bytes(body) and desc.size == len(body)


def test_an_error_to_a_marked_request_keeps_its_kind_whatever_its_encoding(
    hostile: Callable[..., Hostile],
) -> None:
    """A manifest request's 404 with a body in an encoding that cannot be decoded
    (``br``; truncated gzip): still NotFound, the body only informs."""
    bodies = iter([("br", b"\x0b\x02\x80hello"), ("gzip", gzip.compress(b"x" * 1000)[:-20])])

    def missing(h: BaseHTTPRequestHandler) -> None:
        encoding, body = next(bodies)
        _headers(h, 404, Content_Encoding=encoding, Content_Length=str(len(body)))
        h.wfile.write(body)

    server = hostile({"HEAD /v2/app/manifests/v1": _manifest_head,
                      "GET /v2/app/manifests/v1": missing})  # fmt: skip
    with RegistryClient() as client:
        for _ in range(2):
            with pytest.raises(errdefs.NotFound):
                client.resolve(parse_reference(f"{server.host}/app:v1"))


def test_the_bound_of_a_body_is_its_marks_only_for_a_200_or_206() -> None:
    """An error's, a challenge's or a redirect's body is read to :data:`SMALL_BODY_MAX`
    even for a marked request (a manifest's 4 MiB are for the manifest)."""
    request = httpx.Request("GET", "http://x/v2/app/manifests/v1",
                            extensions=httpio.small_body(4 << 20))  # fmt: skip
    for status, expected in [(404, httpio.SMALL_BODY_MAX - 1), (200, 4 << 20)]:
        body = httpx.ByteStream(b"e" * (8 << 20))
        response = httpx.Response(status, stream=body, request=request)
        httpio.bound_small_body(response)
        assert len(response.read()) == expected + 1


def test_a_body_that_fails_to_decode_closes_its_response() -> None:
    packed = gzip.compress(b"y" * 100_000)[:-20]
    response = httpx.Response(
        200, headers={"Content-Encoding": "gzip"},
        stream=httpx.ByteStream(packed), request=httpx.Request("GET", "http://x/blob"),
    )  # fmt: skip
    stream = httpio.BodyStream(response, "fetch x", None, decode=True)
    with pytest.raises(errdefs.DataLoss):
        while stream.read(1 << 16):
            pass
    assert response.is_closed
