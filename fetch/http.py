"""HTTP(S) URLs as a source (:class:`HttpSource`), on the one HTTP layer
(:mod:`ingestq.fetch.httpio`).

* Redirects are followed up to the client's ``max_redirects``; a loop or a longer
  chain is FailedPrecondition ("too many redirects"), permanent.
* Connect and read timeouts are separate; a read that stalls longer than the read
  timeout is Unavailable (retried, and the retry resumes).
* TLS: the system's CAs are trusted, as by the registry source (``SSL_CERT_FILE`` /
  ``SSL_CERT_DIR`` name others). A certificate that fails verification, or any other
  handshake failure (an ``https://`` URL of a plain-HTTP server: "wrong version
  number"), is FailedPrecondition, permanent, as from the registry source.
* Bodies are requested with ``Accept-Encoding: identity`` and read raw, so the bytes
  are the resource.
* Resume: ``Range: bytes=<offset>-`` guarded by ``If-Range`` (a strong ETag, else
  Last-Modified, recorded when the ingest started); a 206 must carry
  ``Content-Range: bytes <offset>-...``, else FailedPrecondition ("unhandled content
  range"); a 200 means the server ignored the range (or the resource changed): the
  stream starts at 0 and the ingest restarts. A 416 whose total equals the offset
  means nothing is left to read (:func:`~ingestq.fetch.httpio.open_range`).
* Conditional: :meth:`HttpSource.open_if_changed` sends ``If-None-Match`` (the ETag)
  and/or ``If-Modified-Since`` (the Last-Modified) of an earlier fetch; ``304 Not
  Modified`` means the bytes are those already fetched (nothing is transferred), any
  other answer is handled as a GET from 0.
* Status codes map as in :mod:`ingestq.fetch.httpio`: 404/410 NotFound, 401
  Unauthenticated, 403 PermissionDenied, 408/429/500/502/503/504 Unavailable with
  ``retry_after`` (seconds) in the details when the server sent Retry-After, 501
  Unimplemented, other 5xx Unknown, other 4xx InvalidArgument.
* A body shorter than its Content-Length is DataLoss (every byte that arrived is
  returned first, so the ingest keeps it for a resume); a malformed (e.g. negative)
  Content-Length is FailedPrecondition; other transport errors are Unavailable.
* A body slower than the low-speed rule (``low_speed``, curl's; from
  :attr:`FetchOptions.low_speed <ingestq.fetch.options.FetchOptions.low_speed>`) is
  Unavailable.

The transport seam: pass a client from :func:`ingestq.fetch.httpio.new_client` with
``transport=...`` to inject one (tests use a real server instead).
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from ingestq.fetch import httpio
from ingestq.fetch.source import Opened


class HttpSource:
    """Bytes at an HTTP(S) URL (the :class:`~ingestq.fetch.source.Source` and
    :class:`~ingestq.fetch.source.Validated` protocols).

    ``client`` is shared and not closed by the source; ``headers`` are added to every
    request (e.g. ``Authorization``); ``low_speed`` is the body's low-speed rule.
    """

    def __init__(
        self,
        url: str,
        client: httpx.Client,
        headers: Mapping[str, str] | None = None,
        *,
        low_speed: httpio.LowSpeed = httpio.DEFAULT_LOW_SPEED,
    ) -> None:
        self._url = url
        self._client = client
        self._headers = dict(headers or {})
        self._low_speed = low_speed
        self.if_range: str | None = None
        self._validator: str | None = None
        self._etag: str | None = None
        self._last_modified: str | None = None

    @property
    def name(self) -> str:
        """The URL."""
        return self._url

    @property
    def validator(self) -> str | None:
        """The strong ETag of the last 200/206, else its Last-Modified, else None."""
        return self._validator

    @property
    def etag(self) -> str | None:
        """The strong ETag of the last 200/206, or None."""
        return self._etag

    @property
    def last_modified(self) -> str | None:
        """The Last-Modified of the last 200/206, or None."""
        return self._last_modified

    def open(self, offset: int = 0) -> Opened:
        """GET the URL from ``offset`` (see the module docstring for every outcome)."""
        what = f"GET {self._url}"

        def get(start: int) -> httpx.Response:
            headers = {**self._headers, **httpio.range_headers(start, self.if_range)}
            return httpio.send(self._client, "GET", self._url, headers, what)

        return self._opened(httpio.open_range(get, offset, what, low_speed=self._low_speed))

    def open_if_changed(self, etag: str | None, last_modified: str | None) -> Opened | None:
        """GET the URL unless it still matches ``etag`` / ``last_modified``: None on
        ``304 Not Modified`` (no body is read), else as :meth:`open` from 0."""
        what = f"GET {self._url}"
        headers = {
            **self._headers,
            **httpio.range_headers(0),
            **httpio.conditional_headers(etag, last_modified),
        }
        response = httpio.send(self._client, "GET", self._url, headers, what)
        if response.status_code == 304:
            response.close()
            return None
        ranged = httpio.open_range(lambda _: response, 0, what, low_speed=self._low_speed)
        return self._opened(ranged)

    def _opened(self, ranged: httpio.Ranged) -> Opened:
        if ranged.response.status_code in (200, 206):
            etag = ranged.response.headers.get("ETag")
            self._etag = etag if etag and not etag.startswith("W/") else None
            self._last_modified = ranged.response.headers.get("Last-Modified") or None
            self._validator = self._etag or self._last_modified
        return ranged.opened


__all__ = ["HttpSource"]
