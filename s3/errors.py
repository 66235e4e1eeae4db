"""The one mapping from S3 (botocore) failures to errdefs kinds: :func:`from_s3_error`.

==============================================  ==========================================
S3 answer                                       kind
==============================================  ==========================================
NoSuchKey, NoSuchUpload, NoSuchBucket, 404      NotFound
412 PreconditionFailed on a publish             AlreadyExists (the digest is committed)
412 elsewhere, 409 conflicts                    FailedPrecondition
SlowDown, 503, 500, timeouts, connections       Unavailable (transient, retried by jobs)
AccessDenied, 403                               PermissionDenied
InvalidAccessKeyId, SignatureDoesNotMatch       Unauthenticated
no credentials at all                           Unauthenticated
InvalidRange                                    OutOfRange
EntityTooSmall, InvalidPart, InvalidPartOrder   FailedPrecondition
other 4xx                                       InvalidArgument
==============================================  ==========================================
"""

from __future__ import annotations

from typing import Any

from ingestq import errdefs

_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchUpload", "NoSuchBucket", "NotFound", "404"})
_UNAUTHENTICATED = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
        "MissingSecurityHeader",
    }
)
_UNAVAILABLE = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "Throttling",
        "ThrottlingException",
        "OperationAborted",
    }
)
_FAILED_PRECONDITION = frozenset(
    {"EntityTooSmall", "InvalidPart", "InvalidPartOrder", "ConditionalRequestConflict"}
)
#: botocore's exceptions for a failure below HTTP (by class name, so this module needs
#: no botocore import): the request may well succeed when retried.
_TRANSPORT = frozenset(
    {
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionError",
        "HTTPClientError",
        "ProxyConnectionError",
        "ResponseStreamingError",
        "IncompleteReadError",
    }
)


def _response(err: BaseException) -> tuple[str, int, str]:
    response: Any = getattr(err, "response", None)
    if not isinstance(response, dict):
        return "", 0, ""
    error = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    code = str(error.get("Code", ""))
    status = int(meta.get("HTTPStatusCode", 0) or 0)
    return code, status, str(error.get("Message", "") or "")


def from_s3_error(
    err: BaseException, context: str, *, publish: bool = False
) -> errdefs.ErrdefsError:
    """The errdefs kind of a boto3/botocore failure ``err`` (see the module table), with
    ``context`` and S3's code and message in the text and details. ``publish`` says the
    request was a conditional create of a content-addressed key, so 412 means the
    digest is already committed (AlreadyExists). An errdefs error is returned as it is.
    """
    if isinstance(err, errdefs.ErrdefsError):
        return err
    name = type(err).__name__
    code, status, message = _response(err)
    details = {"s3_code": code, "http_status": str(status)} if code or status else {}
    text = f"{context}: {code or name}" + (f" ({message})" if message else "")
    kind: type[errdefs.ErrdefsError]
    if code in _NOT_FOUND or status == 404:
        kind = errdefs.NotFound
    elif code == "PreconditionFailed" or status == 412:
        kind = errdefs.AlreadyExists if publish else errdefs.FailedPrecondition
    elif code in _UNAUTHENTICATED or name in ("NoCredentialsError", "PartialCredentialsError"):
        kind = errdefs.Unauthenticated
    elif code == "AccessDenied" or status == 403:
        kind = errdefs.PermissionDenied
    elif code in _UNAVAILABLE or status in (500, 502, 503, 504) or name in _TRANSPORT:
        kind = errdefs.Unavailable
    elif code == "InvalidRange" or status == 416:
        kind = errdefs.OutOfRange
    elif code in _FAILED_PRECONDITION or status == 409:
        kind = errdefs.FailedPrecondition
    elif name == "ParamValidationError" or 400 <= status < 500:
        kind = errdefs.InvalidArgument
    else:
        kind = errdefs.Unknown
    if not code and not status:
        text = f"{context}: {name}: {err}"
    return kind(text, details)


__all__ = ["from_s3_error"]
