"""HTTP(S) URLs as a source, through httpx.

* Redirects are followed up to ``max_redirects``; a loop or a longer chain is
  FailedPrecondition ("too many redirects"), permanent.
* Connect and read timeouts are separate; a read that stalls longer than the read
  timeout is Unavailable (retried, and the retry resumes).
* Bodies are requested with ``Accept-Encoding: identity`` so the bytes are the blob.
* Resume: ``Range: bytes=<offset>-`` guarded by ``If-Range`` (a strong ETag, else
  Last-Modified, recorded when the ingest started). A 206 must carry
  ``Content-Range: bytes <offset>-...``, else FailedPrecondition ("unhandled content
  range"); a 200 means the server ignored the range (or the resource changed): the
  stream starts at 0 and the ingest restarts. A 416 whose total equals the offset
  means nothing is left to read.
* Status codes: 404/410 NotFound, 401 Unauthenticated, 403 PermissionDenied,
  429/503 Unavailable with ``retry_after`` (seconds) in the details when the server
  sent Retry-After, 408/500/502/504 Unavailable, 501 Unimplemented, other 5xx Unknown,
  other 4xx InvalidArgument.
* A body shorter than its Content-Length is DataLoss; transport errors are Unavailable.

The transport seam: pass ``client=httpx.Client(transport=...)`` to inject one (tests
use a real server instead).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterator, Mapping

import httpx

from ingestq import errdefs
from ingestq.fetch.source import Opened

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")


def new_client(
    *,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
    max_redirects: int = 10,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """An httpx client configured for fetching blobs (timeouts, bounded redirects)."""
    return httpx.Client(
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        follow_redirects=True,
        max_redirects=max_redirects,
        transport=transport,
        headers={"Accept-Encoding": "identity", "User-Agent": "ingestq/0.1"},
    )


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def status_error(url: str, response: httpx.Response) -> errdefs.ErrdefsError:
    """The errdefs error for a non-success HTTP status (see the module docstring)."""
    code = response.status_code
    what = f"GET {url}: HTTP {code} {response.reason_phrase}".rstrip()
    if code in (404, 410):
        return errdefs.NotFound(what)
    if code == 401:
        return errdefs.Unauthenticated(what)
    if code == 403:
        return errdefs.PermissionDenied(what)
    if code in (429, 503, 408, 500, 502, 504):
        details: dict[str, str] = {"http_status": str(code)}
        after = retry_after_seconds(response.headers.get("Retry-After"))
        if after is not None:
            details["retry_after"] = f"{after:g}"
        return errdefs.Unavailable(what, details)
    if code == 501:
        return errdefs.Unimplemented(what)
    if code >= 500:
        return errdefs.Unknown(what)
    return errdefs.InvalidArgument(what)


def transport_error(url: str, e: httpx.HTTPError) -> errdefs.ErrdefsError:
    """The errdefs error for an httpx exception."""
    if isinstance(e, httpx.TooManyRedirects):
        return errdefs.FailedPrecondition(f"GET {url}: too many redirects: {e}")
    if isinstance(e, httpx.RemoteProtocolError) and "complete message body" in str(e):
        return errdefs.DataLoss(f"GET {url}: body shorter than announced: {e}")
    if isinstance(e, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return errdefs.InvalidArgument(f"GET {url}: {e}")
    if isinstance(e, httpx.TimeoutException):
        return errdefs.Unavailable(f"GET {url}: timed out: {type(e).__name__}")
    return errdefs.Unavailable(f"GET {url}: {type(e).__name__}: {e}")


class _BodyStream:
    """A response body as a :class:`tasks.sources.base.Stream`."""

    def __init__(self, url: str, response: httpx.Response, expect: int | None) -> None:
        self._url = url
        self._response = response
        self._chunks: Iterator[bytes] = response.iter_raw(CHUNK)
        self._buffer = b""
        self._expect = expect
        self._got = 0
        self._done = False

    def read(self, n: int = -1, /) -> bytes:
        if not self._buffer and not self._done:
            try:
                self._buffer = next(self._chunks, b"")
            except httpx.HTTPError as e:
                raise transport_error(self._url, e) from e
            if not self._buffer:
                self._done = True
                if self._expect is not None and self._got < self._expect:
                    raise errdefs.DataLoss(
                        f"GET {self._url}: body ended after {self._got} of {self._expect} bytes"
                    )
        if n < 0 or n >= len(self._buffer):
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:n], self._buffer[n:]
        self._got += len(out)
        return out

    def close(self) -> None:
        self._response.close()


class _Empty:
    def read(self, n: int = -1, /) -> bytes:
        return b""

    def close(self) -> None:
        return None


class HttpSource:
    """Bytes at an HTTP(S) URL (the :class:`tasks.sources.base.Source` and
    :class:`tasks.sources.base.Validated` protocols).

    ``client`` is shared and not closed by the source; ``headers`` are added to every
    request (e.g. ``Authorization``).
    """

    def __init__(
        self, url: str, client: httpx.Client, headers: Mapping[str, str] | None = None
    ) -> None:
        self._url = url
        self._client = client
        self._headers = dict(headers or {})
        self.if_range: str | None = None
        self._validator: str | None = None

    @property
    def name(self) -> str:
        return self._url

    @property
    def validator(self) -> str | None:
        return self._validator

    def _send(self, offset: int) -> httpx.Response:
        headers = dict(self._headers)
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
            if self.if_range:
                headers["If-Range"] = self.if_range
        try:
            request = self._client.build_request("GET", self._url, headers=headers)
            return self._client.send(request, stream=True)
        except httpx.HTTPError as e:
            raise transport_error(self._url, e) from e

    def _remember_validator(self, response: httpx.Response) -> None:
        etag = response.headers.get("ETag")
        if etag and not etag.startswith("W/"):
            self._validator = etag
        else:
            self._validator = response.headers.get("Last-Modified")

    def open(self, offset: int = 0) -> Opened:
        """GET the URL from ``offset`` (see the module docstring for every outcome)."""
        response = self._send(offset)
        try:
            return self._opened(response, offset)
        except BaseException:
            response.close()
            raise

    def _opened(self, response: httpx.Response, offset: int) -> Opened:
        code = response.status_code
        length = _int_header(response, "Content-Length")
        if code == 200:
            self._remember_validator(response)
            return Opened(_BodyStream(self._url, response, length), 0, length)
        if code == 206:
            if offset == 0:
                raise errdefs.FailedPrecondition(
                    f"GET {self._url}: partial content without a range request"
                )
            content_range = response.headers.get("Content-Range", "")
            m = _CONTENT_RANGE.match(content_range.strip())
            if m is None or int(m.group(1)) != offset:
                raise errdefs.FailedPrecondition(
                    f"GET {self._url}: unhandled content range in response: "
                    f"{content_range!r} for a request from offset {offset}"
                )
            first, last = int(m.group(1)), int(m.group(2))
            if last < first or (length is not None and length != last - first + 1):
                raise errdefs.FailedPrecondition(
                    f"GET {self._url}: content range {content_range!r} disagrees with "
                    f"Content-Length {length}"
                )
            total = int(m.group(3)) if m.group(3) != "*" else None
            self._remember_validator(response)
            return Opened(_BodyStream(self._url, response, last - first + 1), offset, total)
        if code == 416 and offset > 0:
            m = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", "").strip())
            response.close()
            if m is not None and int(m.group(1)) == offset:
                return Opened(_Empty(), offset, offset)
            return self.open(0)
        raise status_error(self._url, response)


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None
