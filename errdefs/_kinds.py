"""The error kinds: one exception class per gRPC status code, under a common base.

The tree (gRPC code, then the kind text that ``str()`` appends)::

    Exception
     └── ErrdefsError              base of every kind; on its own it behaves as Unknown
          ├── Canceled             1   "context canceled"
          ├── Unknown              2   "unknown"
          ├── InvalidArgument      3   "invalid argument"
          ├── DeadlineExceeded     4   "context deadline exceeded"
          ├── NotFound             5   "not found"
          ├── AlreadyExists        6   "already exists"
          ├── PermissionDenied     7   "permission denied"
          ├── ResourceExhausted    8   "resource exhausted"
          ├── FailedPrecondition   9   "failed precondition"
          ├── Aborted             10   "aborted"
          ├── OutOfRange          11   "out of range"
          ├── Unimplemented       12   "not implemented"   (also exported as NotImplemented)
          ├── Internal            13   "internal"
          ├── Unavailable         14   "unavailable"
          ├── DataLoss            15   "data loss"
          └── Unauthenticated     16   "unauthorized"

The kind texts are containerd's (``github.com/containerd/errdefs``), so messages read
``<context>: <kind text>`` exactly as containerd's do: ``NotFound("content sha256:ab")``
prints ``content sha256:ab: not found``.

Every class has one constructor shape, ``(message="", details=None)``, and ``args`` is
exactly that pair. That is what lets pickle and Celery's ``cls(*args)`` rebuild an
error as the same class with the same message and details. Subclasses (for example a
store's ``RefLocked(Unavailable)``) must keep that shape: do not override ``__init__``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Final


class ErrdefsError(Exception):
    """Base class of every errdefs error.

    Args:
        message: the context, without the kind text (``"content sha256:ab"``). A
            message that already ends with ``": <kind text>"`` (such as ``str()`` of
            an error of the same kind) is kept as it is, so rebuilding an error from
            its own text is idempotent.
        details: optional string-to-string facts (digest, ref, ...) that travel with
            the error through pickle, Celery results, error records and JSON.

    ``args`` is exactly ``(message, details or None)``. ``str(err)`` is the kind text
    when the message is empty, the message when it already reads ``...: <kind
    text>``, and ``"<message>: <kind text>"`` otherwise.

    Raise one of the subclasses; a bare ``ErrdefsError`` classifies as Unknown.
    """

    #: containerd's text for the kind, appended by ``str()`` (e.g. ``"not found"``).
    kind: ClassVar[str] = "unknown"
    #: the gRPC status code number of the kind (e.g. 5 for NOT_FOUND).
    grpc_code: ClassVar[int] = 2
    #: the kind's name as used in error records (e.g. ``"NotFound"``).
    name: ClassVar[str] = "Unknown"

    def __init__(self, message: str = "", details: Mapping[str, str] | None = None) -> None:
        super().__init__(message, dict(details) if details else None)

    @property
    def message(self) -> str:
        """The message given to the constructor (``args[0]``), without the kind text."""
        raw: object = self.args[0] if self.args else ""
        return raw if isinstance(raw, str) else str(raw)

    @property
    def details(self) -> dict[str, str]:
        """A fresh copy of the details given to the constructor; empty if there were none."""
        raw: object = self.args[1] if len(self.args) > 1 else None
        if not isinstance(raw, Mapping):
            return {}
        return {str(key): str(value) for key, value in raw.items()}

    def __str__(self) -> str:
        message, kind = self.message, self.kind
        if not message:
            return kind
        if message == kind or message.endswith(": " + kind):
            return message
        return f"{message}: {kind}"

    def __repr__(self) -> str:
        details = self.details
        if details:
            return f"{type(self).__qualname__}({self.message!r}, {details!r})"
        return f"{type(self).__qualname__}({self.message!r})"


class Canceled(ErrdefsError):
    """The operation was canceled, typically by its caller (gRPC CANCELLED, 1).

    Also what ``asyncio.CancelledError`` and ``concurrent.futures.CancelledError``
    classify as.
    """

    kind = "context canceled"
    grpc_code = 1
    name = "Canceled"


class Unknown(ErrdefsError):
    """An error of no known kind (gRPC UNKNOWN, 2).

    Every error that is not an errdefs error and has no built-in mapping crosses a
    boundary as Unknown, with its message preserved.
    """

    kind = "unknown"
    grpc_code = 2
    name = "Unknown"


class InvalidArgument(ErrdefsError):
    """The caller supplied an invalid argument: a malformed digest, ref, filter or
    label, or an undecodable record (gRPC INVALID_ARGUMENT, 3)."""

    kind = "invalid argument"
    grpc_code = 3
    name = "InvalidArgument"


class DeadlineExceeded(ErrdefsError):
    """The operation did not finish before its deadline (gRPC DEADLINE_EXCEEDED, 4).

    Also what the built-in ``TimeoutError`` (and its subclasses) classify as.
    """

    kind = "context deadline exceeded"
    grpc_code = 4
    name = "DeadlineExceeded"


class NotFound(ErrdefsError):
    """The requested object (blob, ingest, image) does not exist (gRPC NOT_FOUND, 5).

    Also what ``FileNotFoundError`` classifies as.
    """

    kind = "not found"
    grpc_code = 5
    name = "NotFound"


class AlreadyExists(ErrdefsError):
    """The object to be created already exists, e.g. a blob with the expected digest is
    already committed; ingest callers treat it as success (gRPC ALREADY_EXISTS, 6)."""

    kind = "already exists"
    grpc_code = 6
    name = "AlreadyExists"


class PermissionDenied(ErrdefsError):
    """The caller may not perform the operation (gRPC PERMISSION_DENIED, 7).

    Also what ``PermissionError`` classifies as.
    """

    kind = "permission denied"
    grpc_code = 7
    name = "PermissionDenied"


class ResourceExhausted(ErrdefsError):
    """A resource ran out: disk space, quota, file size, rate limit (gRPC
    RESOURCE_EXHAUSTED, 8).

    Also what an ``OSError`` with errno ENOSPC, EDQUOT or EFBIG classifies as.
    """

    kind = "resource exhausted"
    grpc_code = 8
    name = "ResourceExhausted"


class FailedPrecondition(ErrdefsError):
    """The system is not in the state the operation requires, e.g. a commit whose size
    or digest does not match; the ingest is kept for a retry (gRPC
    FAILED_PRECONDITION, 9)."""

    kind = "failed precondition"
    grpc_code = 9
    name = "FailedPrecondition"


class Aborted(ErrdefsError):
    """The operation was aborted by a concurrency conflict, e.g. a lost lease or a stale
    fencing token (gRPC ABORTED, 10)."""

    kind = "aborted"
    grpc_code = 10
    name = "Aborted"


class OutOfRange(ErrdefsError):
    """An offset or range lies outside the valid range, e.g. reading past the end of a
    blob (gRPC OUT_OF_RANGE, 11)."""

    kind = "out of range"
    grpc_code = 11
    name = "OutOfRange"


class Unimplemented(ErrdefsError):
    """The operation is not implemented or not supported (gRPC UNIMPLEMENTED, 12).

    containerd calls this kind ``ErrNotImplemented``; it is exported under both names,
    ``errdefs.Unimplemented`` and ``errdefs.NotImplemented`` (the same class).
    """

    kind = "not implemented"
    grpc_code = 12
    name = "Unimplemented"


class Internal(ErrdefsError):
    """An invariant was broken inside the system: a bug, not the caller's fault (gRPC
    INTERNAL, 13)."""

    kind = "internal"
    grpc_code = 13
    name = "Internal"


class Unavailable(ErrdefsError):
    """The resource is temporarily unavailable, e.g. the ingest ref is locked by another
    writer or a service is down; retrying later may succeed (gRPC UNAVAILABLE, 14)."""

    kind = "unavailable"
    grpc_code = 14
    name = "Unavailable"


class DataLoss(ErrdefsError):
    """Data was lost or corrupted: unreadable or inconsistent stored content (gRPC
    DATA_LOSS, 15)."""

    kind = "data loss"
    grpc_code = 15
    name = "DataLoss"


class Unauthenticated(ErrdefsError):
    """The caller's credentials are missing or invalid (gRPC UNAUTHENTICATED, 16); the
    kind text is containerd's ``unauthorized``."""

    kind = "unauthorized"
    grpc_code = 16
    name = "Unauthenticated"


_ORDERED: Final[tuple[type[ErrdefsError], ...]] = (
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
)

#: Every kind by its name (``KINDS["NotFound"] is NotFound``), in gRPC code order.
#: Read-only; this is the allowlist that every decoder builds classes from.
KINDS: Final[Mapping[str, type[ErrdefsError]]] = MappingProxyType({k.name: k for k in _ORDERED})

_ALIASES: Final[Mapping[str, type[ErrdefsError]]] = MappingProxyType(
    {"NotImplemented": Unimplemented}
)


_BY_TYPE: Final[Mapping[type, type[ErrdefsError]]] = MappingProxyType({k: k for k in _ORDERED})


def lookup_name(name: str) -> type[ErrdefsError] | None:
    """The kind registered under ``name`` (a ``KINDS`` key or the alias
    ``"NotImplemented"``), or None. Never looks anywhere but the registry."""
    return KINDS.get(name) or _ALIASES.get(name)


def canonical_kind(cls: type[ErrdefsError]) -> type[ErrdefsError]:
    """The registered kind that ``cls`` is or derives from (the first in its MRO), or
    Unknown for ``ErrdefsError`` itself and classes deriving only from it."""
    for base in cls.__mro__:
        found = _BY_TYPE.get(base)
        if found is not None:
            return found
    return Unknown
