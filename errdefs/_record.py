"""The error record: the language-neutral form of an error, for task results and Redis.

The record is the protobuf message ``ingestq.errdefs.v1.ErrorRecord``
(``errdefs/record.proto``). Its JSON form is proto3 JSON with the field names as
written in the ``.proto``; all four fields are always present when encoding::

    {"kind": "NotFound", "code": 5,
     "message": "content sha256:ab: not found", "details": {"ref": "layer-sha256:ab"}}

* ``kind``: the kind's name, a key of ``errdefs.KINDS`` (``"NotImplemented"`` is
  accepted as an alias of ``"Unimplemented"``);
* ``code``: its gRPC status code number (never 0);
* ``message``: the full ``str(err)``, kind suffix included;
* ``details``: string keys to string values, sorted by key when encoding.

Encoding: the kind is ``resolve(err)``; any exception of no kind becomes Unknown
(code 2) with ``str(err)`` as its message. Strings that are not valid Unicode (lone
surrogates, e.g. from undecodable file names) are backslash-escaped.

Decoding never imports or constructs anything outside the errdefs registry:

1. ``kind`` names a registered kind and ``code`` is 0 or agrees with it: that kind;
2. otherwise ``code`` decides (``by_code``), so an unregistered or inconsistent
   ``kind`` yields the code's kind, and an unmapped or missing code yields Unknown.

The message is then rebuilt exactly as ``from_grpc`` does, so ``str()`` of the decoded
error equals the recorded message. Input that is not a JSON object of the right
shape raises ``InvalidArgument``.

protobuf (the generated ``record_pb2`` and ``json_format``) is imported by the functions
that use it, on their first call, so ``import ingestq.errdefs`` stays free of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypedDict

from ingestq.errdefs._classify import resolve, safe_str
from ingestq.errdefs._grpc import OK, by_code
from ingestq.errdefs._kinds import ErrdefsError, InvalidArgument, Unknown, lookup_name

if TYPE_CHECKING:
    from ingestq.errdefs.record_pb2 import ErrorRecord


def _message() -> type[ErrorRecord]:
    """The generated message class (imports protobuf on the first call)."""
    from ingestq.errdefs.record_pb2 import ErrorRecord

    return ErrorRecord


class ErrorRecordDict(TypedDict):
    """The JSON object form of an :class:`ErrorRecord` (see the module docstring)."""

    kind: str
    code: int
    message: str
    details: dict[str, str]


def _valid_text(text: str) -> str:
    """``text`` unchanged if it encodes as UTF-8, else with lone surrogates escaped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def to_record(err: BaseException) -> ErrorRecord:
    """The record of ``err``: kind and code of ``resolve(err)``, message ``str(err)``,
    and the details of ``err`` if it is an errdefs error."""
    kind = resolve(err)
    details = err.details if isinstance(err, ErrdefsError) else {}
    return _message()(
        kind=kind.name,
        code=kind.grpc_code,
        message=_valid_text(safe_str(err)),
        details={_valid_text(key): _valid_text(value) for key, value in details.items()},
    )


def _kind_for(name: str, code: int) -> type[ErrdefsError]:
    """The registry kind for a record's ``kind`` name and ``code`` (see the module
    docstring); only ever a ``KINDS`` class."""
    named = lookup_name(name) if name else None
    if code == OK:
        return named or Unknown
    if named is not None and named.grpc_code == code:
        return named
    return by_code(code)


def from_record(rec: ErrorRecord) -> ErrdefsError:
    """The errdefs error a record describes; ``str()`` of it equals ``rec.message``
    whenever the recorded message carries the kind's suffix (as encoded ones do)."""
    kind = _kind_for(rec.kind, rec.code)
    message = "" if rec.message == kind.kind else rec.message
    return kind(message, dict(rec.details) or None)


def _record_to_dict(rec: ErrorRecord) -> ErrorRecordDict:
    """The JSON object form of ``rec``: what ``json_format.MessageToDict`` gives with
    the proto field names and every field present, with details sorted."""
    return {
        "kind": rec.kind,
        "code": rec.code,
        "message": rec.message,
        "details": dict(sorted(rec.details.items())),
    }


def _record_from_object(obj: object) -> ErrorRecord:
    """Parse a decoded JSON value into a record, or raise InvalidArgument."""
    if not isinstance(obj, Mapping):
        raise InvalidArgument(f"error record: expected a JSON object, got {type(obj).__name__}")
    from google.protobuf import json_format

    try:
        return json_format.ParseDict(dict(obj), _message()(), ignore_unknown_fields=True)
    except Exception as e:  # untrusted input: every failure is the caller's bad argument
        raise InvalidArgument(f"error record: {e}") from e


def record_to_json(rec: ErrorRecord) -> str:
    """The compact, ASCII-only JSON text of ``rec`` (see the module docstring)."""
    return json.dumps(_record_to_dict(rec), separators=(",", ":"))


def record_from_json(text: str | bytes) -> ErrorRecord:
    """Parse the JSON text of a record.

    Raises:
        InvalidArgument: ``text`` is not JSON, not an object, or has a field of the
            wrong type or range.
    """
    try:
        obj: object = json.loads(text)
    except (ValueError, TypeError, RecursionError) as e:
        raise InvalidArgument(f"error record: invalid JSON: {e}") from e
    return _record_from_object(obj)


def to_json_dict(err: BaseException) -> ErrorRecordDict:
    """The JSON object form of ``to_record(err)``, ready for ``json.dumps``."""
    return _record_to_dict(to_record(err))


def from_json_dict(obj: Mapping[str, object]) -> ErrdefsError:
    """The errdefs error a JSON object form of a record describes.

    Raises:
        InvalidArgument: ``obj`` is not a mapping or has a field of the wrong type or
            range.
    """
    return from_record(_record_from_object(obj))
