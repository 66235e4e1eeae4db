"""Registry error responses as errdefs kinds, with the raw evidence kept inside.

A registry error body is ``{"errors": [{"code", "message", "detail"}]}`` (Part B5), but
4xx bodies may be anything (the router's plain-text 404, the text/plain 416). The kind
comes from the first known error code, else from the HTTP status by the one mapping of
:func:`ingestq.fetch.httpio.status_kind`:

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

A 404 "... but accept header does not support ..." is the client's fault, not a
missing object: Unimplemented.

Every error carries the details of :func:`ingestq.fetch.httpio.status_error`
(``status``, ``method``, ``url``, and ``retry_after`` when Unavailable with
Retry-After) plus ``code`` (may be empty), ``body`` (the first 4 KiB) and
``www_authenticate`` when the registry sent a challenge. Transport failures are
:func:`ingestq.fetch.httpio.transport_error`'s.
"""

from __future__ import annotations

import json

import httpx

from ingestq import errdefs
from ingestq.fetch import httpio

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
    """The errdefs error for a failed registry response (see the module docstring).

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
    errors = parse_error_body(body)
    kind: type[errdefs.ErrdefsError] | None = None
    code = ""
    for c, _message in errors:
        if c in CODE_KINDS:
            kind, code = CODE_KINDS[c], c
            break
    if not code and errors:
        code = errors[0][0]
    text = body.decode("utf-8", "replace")
    if status == 404 and "accept header does not support" in text:
        kind = errdefs.Unimplemented
    summary = "; ".join(f"{c}: {m}" if m else c for c, m in errors if c or m)
    if not summary:
        summary = text.strip().splitlines()[0][:200] if text.strip() else response.reason_phrase
    details = {"code": code, "body": text[:BODY_LIMIT]}
    challenge = response.headers.get("www-authenticate")
    if challenge:
        details["www_authenticate"] = challenge
    request = response.request
    return httpio.status_error(
        response,
        f"{what}: {request.method} {request.url}",
        kind=kind,
        summary=summary,
        details=details,
    )


__all__ = ["CODE_KINDS", "error_from_response", "parse_error_body"]
