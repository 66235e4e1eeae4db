"""Making the boto3 S3 client from the usual AWS environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
``AWS_PROFILE``, shared config files): boto3 reads them itself. boto3 is the optional
extra ``ingestq[s3]``; without it, FailedPrecondition says how to install it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ingestq import errdefs

#: Attempts botocore makes per request (its "standard" retry mode: throttling, 5xx and
#: connection errors, with backoff) before the error reaches the store as Unavailable.
MAX_ATTEMPTS = 4
#: Connections kept per client: writers upload several parts at once.
MAX_POOL_CONNECTIONS = 32
#: Seconds to connect, and to wait for each read of an answer: a silent server costs
#: at most MAX_ATTEMPTS times their sum before Unavailable.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0


def make_client(
    env: Mapping[str, str] | None = None,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    **overrides: Any,
) -> Any:
    """A boto3 S3 client configured from ``env`` (default ``os.environ``): path-style
    addressing when a custom endpoint is set (what S3-compatible servers expect),
    standard retries, a pool of :data:`MAX_POOL_CONNECTIONS`, the connect and read
    timeouts, checksums only where an operation requires them and, over HTTPS, no
    SHA-256 of request bodies.
    ``overrides`` go to ``boto3.Session.client``.

    FailedPrecondition when boto3 is not installed; Unauthenticated or InvalidArgument
    (via :func:`ingestq.s3.errors.from_s3_error`) for a broken profile.
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError as e:
        raise errdefs.FailedPrecondition(
            "the S3 store needs boto3: pip install 'ingestq[s3]'"
        ) from e
    from ingestq.s3.errors import from_s3_error

    env = os.environ if env is None else env
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    s3: dict[str, Any] = {"addressing_style": "path" if endpoint else "auto"}
    if endpoint is None or endpoint.lower().startswith("https://"):
        # TLS protects the bytes in transit; without this botocore would SHA-256 every
        # request body to sign it (no checksum header: see below), a second pass over
        # content the store hashes anyway. Over plain HTTP the signature is the only
        # check of the body, so it stays.
        s3["payload_signing_enabled"] = False
    config = Config(
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        max_pool_connections=MAX_POOL_CONNECTIONS,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        s3=s3,
        # No CRC32/MD5 computed on every PUT (and no aws-chunked trailers, which many
        # S3-compatible servers reject): only where an operation requires one.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    kwargs: dict[str, Any] = {"config": config}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    kwargs.update(overrides)
    try:
        session = boto3.session.Session(profile_name=env.get("AWS_PROFILE") or None)
        return session.client("s3", **kwargs)
    except Exception as e:
        raise from_s3_error(e, "S3 client") from e


__all__ = ["make_client"]
