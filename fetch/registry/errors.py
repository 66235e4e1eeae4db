"""Registry error responses as errdefs kinds, with the raw evidence kept inside.

A registry error body is ``{"errors": [{"code", "message", "detail"}]}`` (Part B5), but
4xx bodies may be anything (the router's plain-text 404, the text/plain 416). The kind
comes from the first known error code, else from the HTTP status:

==========================================  =========================================
code                                        kind
==========================================  =========================================
BLOB_UNKNOWN, MANIFEST_UNKNOWN,             NotFound
NAME_UNKNOWN, BLOB_UPLOAD_UNKNOWN
UNAUTHORIZED                                Unauthenticated
DENIED                                      PermissionDenied
TOOMANYREQUESTS                             Unavailable (``retry_after`` detail)
UNSUPPORTED                                 Unimplemented
DIGEST_INVALID                              DataLoss
SIZE_INVALID, NAME_INVALID, TAG_INVALID,    InvalidArgument
MANIFEST_INVALID, MANIFEST_UNVERIFIED,
BLOB_UPLOAD_INVALID, PAGINATION_NUMBER_INVALID
MANIFEST_BLOB_UNKNOWN                       FailedPrecondition
RANGE_INVALID                               OutOfRange
==========================================  =========================================

By status when no code is known: 400 InvalidArgument, 401 Unauthenticated, 403
PermissionDenied, 404 NotFound, 405/501 Unimplemented, 408/429/5xx Unavailable, 416
OutOfRange, anything else Unknown. A 404 "... but accept header does not support ..."
is the client's fault, not a missing object: Unimplemented.

Every error carries details ``status``, ``method``, ``url``, ``code`` (may be empty),
``body`` (the first 4 KiB) and, for 429/503, ``retry_after`` (seconds).
"""

from __future__ import annotations

import email.utils
import json
import ssl
import time

import httpx

from ingestq import errdefs

#: Bytes of an error body kept in the error's details.
BODY_LIMIT = 4096

CODE_KINDS: dict[str, type[errdefs.ErrdefsError]] = {
    "BLOB_UNKNOWN": errdefs.NotFound,
    "MANIFEST_UNKNOWN": errdefs.NotFound,
    "NAME_UNKNOWN": errdefs.NotFound,
    "BLOB_UPLOAD_UNKNOWN": errdefs.NotFound,
    "UNAUTHORIZED": errdefs.Unauthenticated,
    "DENIED": errdefs.PermissionDenied,
    "TOOMANYREQUESTS": errdefs.Unavailable,
    "UNSUPPORTED": errdefs.Unimplemented,
    "DIGEST_INVALID": errdefs.DataLoss,
    "SIZE_INVALID": errdefs.InvalidArgument,
    "NAME_INVALID": errdefs.InvalidArgument,
    "TAG_INVALID": errdefs.InvalidArgument,
    "MANIFEST_INVALID": errdefs.InvalidArgument,
    "MANIFEST_UNVERIFIED": errdefs.InvalidArgument,
    "BLOB_UPLOAD_INVALID": errdefs.InvalidArgument,
    "PAGINATION_NUMBER_INVALID": errdefs.InvalidArgument,
    "MANIFEST_BLOB_UNKNOWN": errdefs.FailedPrecondition,
    "RANGE_INVALID": errdefs.OutOfRange,
}

STATUS_KINDS: dict[int, type[errdefs.ErrdefsError]] = {
    400: errdefs.InvalidArgument,
    401: errdefs.Unauthenticated,
    403: errdefs.PermissionDenied,
    404: errdefs.NotFound,
    405: errdefs.Unimplemented,
    408: errdefs.Unavailable,
    416: errdefs.OutOfRange,
    429: errdefs.Unavailable,
    501: errdefs.Unimplemented,
}


def retry_after(response: httpx.Response, *, now: float | None = None) -> float | None:
    """Seconds from the ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def parse_error_body(body: bytes) -> list[tuple[str, str]]:
    """The (code, message) pairs of a registry error body; empty if it is not one."""
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return []
    out: list[tuple[str, str]] = []
    for item in errors:
        if isinstance(item, dict):
            out.append((str(item.get("code") or ""), str(item.get("message") or "")))
    return out


def error_from_response(
    response: httpx.Response, what: str, body: bytes | None = None
) -> errdefs.ErrdefsError:
    """The errdefs error for a failed registry response.

    Args:
        response: the response (its body is read here unless ``body`` is given; pass
            ``b""`` to leave an unread body alone, e.g. for a 416).
        what: context for the message, e.g. ``"fetch blob sha256:..."``.
        body: the body, if the caller already has it.
    """
    if body is None:
        try:
            body = response.read()
        except httpx.HTTPError:
            body = b""
    status = response.status_code
    request = response.request
    errors = parse_error_body(body)
    kind: type[errdefs.ErrdefsError] | None = None
    code = ""
    for c, _message in errors:
        if c in CODE_KINDS:
            kind, code = CODE_KINDS[c], c
            break
    if not code and errors:
        code = errors[0][0]
    if kind is None:
        if status in STATUS_KINDS:
            kind = STATUS_KINDS[status]
        elif status >= 500:
            kind = errdefs.Unavailable
        else:
            kind = errdefs.Unknown
    text = body.decode("utf-8", "replace")
    if status == 404 and "accept header does not support" in text:
        kind = errdefs.Unimplemented
    summary = "; ".join(f"{c}: {m}" if m else c for c, m in errors if c or m)
    if not summary:
        summary = text.strip().splitlines()[0][:200] if text.strip() else response.reason_phrase
    message = f"{what}: {request.method} {request.url}: {status} {summary}".rstrip()
    details = {
        "status": str(status),
        "method": request.method,
        "url": str(request.url),
        "code": code,
        "body": text[:BODY_LIMIT],
    }
    delay = retry_after(response)
    if delay is not None:
        details["retry_after"] = f"{delay:g}"
    challenge = response.headers.get("www-authenticate")
    if challenge:
        details["www_authenticate"] = challenge
    return kind(message, details)


def _cert_error(err: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def transport_error(err: httpx.HTTPError, what: str) -> errdefs.ErrdefsError:
    """An httpx transport failure (connect, read, timeout, protocol) as Unavailable; an
    invalid URL as InvalidArgument; a certificate that fails verification as
    FailedPrecondition (retrying cannot help: configure a CA bundle or skip verify)."""
    if isinstance(err, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return errdefs.InvalidArgument(f"{what}: {err}")
    cert = _cert_error(err)
    if cert is not None:
        return errdefs.FailedPrecondition(
            f"{what}: TLS certificate verification failed: {cert.verify_message or cert}"
        )
    try:
        url = str(err.request.url)
    except RuntimeError:
        url = ""
    detail = str(err) or type(err).__name__
    return errdefs.Unavailable(f"{what}: {detail}", {"url": url, "error": type(err).__name__})


__all__ = [
    "CODE_KINDS",
    "STATUS_KINDS",
    "error_from_response",
    "parse_error_body",
    "retry_after",
    "transport_error",
]
