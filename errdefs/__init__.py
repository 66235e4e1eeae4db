"""errdefs: the error kinds of ingestq, and their conversions at every boundary.

One exception class per gRPC status code (``NotFound``, ``AlreadyExists``,
``Unavailable``, ...) under ``ErrdefsError``; messages read ``<context>: <kind text>``
like containerd's. Kinds survive wrapping (``wrap``, ``raise ... from``) because
classification (``is_not_found``, ``resolve``, ...) looks through the whole chain.
Every boundary converts with one function pair:

* gRPC status numbers: ``to_grpc`` / ``from_grpc``;
* the language-neutral error record (protobuf ``ErrorRecord`` and its JSON form) for
  task results and Redis: ``to_record`` / ``from_record``, ``record_to_json`` /
  ``record_from_json``, ``to_json_dict`` / ``from_json_dict``;
* Celery results: the classes pickle and survive Celery's JSON exception format as
  themselves; ``normalize`` repairs what comes back otherwise.

An error that is not an errdefs error crosses every boundary as Unknown (or its
built-in kind, e.g. ``FileNotFoundError`` as NotFound) with its message preserved,
and no decoder ever imports or constructs a class that input names.

This package imports nothing else of ingestq.
"""

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
from ingestq.errdefs._normalize import normalize
from ingestq.errdefs._record import (
    ErrorRecordDict,
    from_json_dict,
    from_record,
    record_from_json,
    record_to_json,
    to_json_dict,
    to_record,
)
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
    "normalize",
    "record_from_json",
    "record_to_json",
    "resolve",
    "to_grpc",
    "to_json_dict",
    "to_record",
    "wrap",
]

# The classes live in a private module; give them their public home so tracebacks,
# pickle and Celery (which records ``__module__``) all use the stable name ``errdefs``.
for _cls in (ErrdefsError, *KINDS.values()):
    _cls.__module__ = __name__
del _cls
