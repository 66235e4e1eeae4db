"""Namespaces and leases as containerd carries them: gRPC metadata on every request.

``containerd-namespace`` is required on every call of every service (there is no
server-side default): a missing or empty value is FailedPrecondition ``namespace is
required``, an invalid one InvalidArgument (containerd's identifier rules: at most 76
characters matching ``^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$``).

``containerd-lease`` optionally names the lease that protects what a call writes.

How namespaces map onto ingestq's single store (a documented policy, containerd's
``shared`` content policy taken one step further): blobs, their labels, ingests (refs)
and images live once in the store and are visible from every namespace. Only leases are
kept per namespace. So a blob fetched under ``-n k8s.io`` is found under ``-n default``,
and a ref being written from one namespace is locked for all of them, exactly as for
two workers.
"""

from __future__ import annotations

import re

import grpc

from ingestq import errdefs

NAMESPACE_KEY = "containerd-namespace"
LEASE_KEY = "containerd-lease"
MAX_LENGTH = 76
PATTERN = r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
_IDENTIFIER = re.compile(PATTERN)


def validate(namespace: str) -> str:
    """Return ``namespace`` if it is a valid identifier; InvalidArgument otherwise, with
    containerd's message (``namespace validation: identifier "x" must match ...``)."""
    if len(namespace) > MAX_LENGTH:
        raise errdefs.InvalidArgument(
            f'namespace validation: identifier "{namespace}" greater than maximum length '
            f"({MAX_LENGTH} characters)"
        )
    if not _IDENTIFIER.fullmatch(namespace):
        raise errdefs.InvalidArgument(
            f'namespace validation: identifier "{namespace}" must match {PATTERN}'
        )
    return namespace


def _first(context: grpc.ServicerContext, key: str) -> str:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode("utf-8", "replace")
    return ""


def required(context: grpc.ServicerContext) -> str:
    """The request's namespace. FailedPrecondition ``namespace is required`` when the
    metadata is missing or empty, InvalidArgument when it is not a valid identifier."""
    namespace = _first(context, NAMESPACE_KEY)
    if not namespace:
        raise errdefs.FailedPrecondition("namespace is required")
    return validate(namespace)


def lease(context: grpc.ServicerContext) -> str | None:
    """The lease id from ``containerd-lease``, or None."""
    return _first(context, LEASE_KEY) or None


def metadata(namespace: str, lease_id: str | None = None) -> tuple[tuple[str, str], ...]:
    """The call metadata a client sends for ``namespace`` (and ``lease_id``)."""
    validate(namespace)
    md: tuple[tuple[str, str], ...] = ((NAMESPACE_KEY, namespace),)
    if lease_id:
        md += ((LEASE_KEY, lease_id),)
    return md
