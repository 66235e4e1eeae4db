"""errdefs: the error kinds of ingestq, and their conversions at every boundary.

One exception class per gRPC status code (``NotFound``, ``AlreadyExists``,
``Unavailable``, ...) under ``ErrdefsError``; messages read ``<context>: <kind text>``
like containerd's. Kinds survive wrapping (``wrap``, ``raise ... from``) because
classification (``is_not_found``, ``resolve``, ...) looks through the whole chain.
Every boundary converts with one function pair:

* gRPC status numbers: ``to_grpc`` / ``from_grpc``;
* the language-neutral error record (protobuf ``ErrorRecord`` and its JSON form) for
  task results and Redis: ``to_record`` / ``from_record``, ``record_to_json`` /
  ``record_from_json``, ``to_json_dict`` / ``from_json_dict``. protobuf is imported
  only when one of these runs (or ``ErrorRecord`` is first used), never by
  ``import ingestq.errdefs``.

The classes pickle, and keep their public module name (``ingestq.errdefs``) for any
serializer that records ``__module__``; the Celery side of errors (encoding for task
results, decoding result meta, normalizing what a Celery result gives back) lives in
``ingestq.tasks.codec``.

An error that is not an errdefs error crosses every boundary as Unknown (or its
built-in kind, e.g. ``FileNotFoundError`` as NotFound) with its message preserved,
and no decoder ever imports or constructs a class that input names.

This package imports nothing else of ingestq.
"""

import typing

from ingestq.errdefs._classify import (
    from_exception,
    is_aborted,
    is_already_exists,
    is_canceled,
    is_data_loss,
    is_deadline_exceeded,
    is_failed_precondition,
    is_internal,
    is_invalid_argument,
    is_not_found,
    is_not_implemented,
    is_out_of_range,
    is_permission_denied,
    is_resource_exhausted,
    is_unauthenticated,
    is_unavailable,
    is_unknown,
    resolve,
    wrap,
)
from ingestq.errdefs._grpc import by_code, from_grpc, to_grpc
from ingestq.errdefs._kinds import (
    KINDS,
    Aborted,
    AlreadyExists,
    Canceled,
    DataLoss,
    DeadlineExceeded,
    ErrdefsError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)
from ingestq.errdefs._record import (
    ErrorRecordDict,
    from_json_dict,
    from_record,
    record_from_json,
    record_to_json,
    to_json_dict,
    to_record,
)

if typing.TYPE_CHECKING:
    from ingestq.errdefs.record_pb2 import ErrorRecord

#: containerd's name for the Unimplemented kind; the same class object.
NotImplemented = Unimplemented

__all__ = [
    "KINDS",
    "Aborted",
    "AlreadyExists",
    "Canceled",
    "DataLoss",
    "DeadlineExceeded",
    "ErrdefsError",
    "ErrorRecord",
    "ErrorRecordDict",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "NotImplemented",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "by_code",
    "from_exception",
    "from_grpc",
    "from_json_dict",
    "from_record",
    "is_aborted",
    "is_already_exists",
    "is_canceled",
    "is_data_loss",
    "is_deadline_exceeded",
    "is_failed_precondition",
    "is_internal",
    "is_invalid_argument",
    "is_not_found",
    "is_not_implemented",
    "is_out_of_range",
    "is_permission_denied",
    "is_resource_exhausted",
    "is_unauthenticated",
    "is_unavailable",
    "is_unknown",
    "record_from_json",
    "record_to_json",
    "resolve",
    "to_grpc",
    "to_json_dict",
    "to_record",
    "wrap",
]

# The classes live in a private module; give them their public home so tracebacks,
# pickle and serializers that record ``__module__`` all use the stable name.
for _cls in (ErrdefsError, *KINDS.values()):
    _cls.__module__ = __name__
del _cls


def __getattr__(name: str) -> object:
    """``ErrorRecord``, the generated protobuf message, imported on first use so that
    importing errdefs does not load protobuf (PEP 562)."""
    if name == "ErrorRecord":
        from ingestq.errdefs.record_pb2 import ErrorRecord

        globals()["ErrorRecord"] = ErrorRecord
        return ErrorRecord
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
