"""The Celery error codec: errdefs errors into Celery task results and back.

* :func:`encode`: what a task raises so Celery stores the errdefs class itself, with
  its message and details as ``args`` (never a subclass, a cause or a foreign class).
* :func:`error_from_celery_exc`: Celery's stored exception fields (``exc_type``,
  ``exc_message``, ``exc_module``) of a result meta, decoded by registry lookup only.
* :func:`error_from_meta`: the error of a failed or revoked job's meta, preferring the
  job record's error record.
* :func:`normalize`: whatever exception a Celery *result object* hands back (its own
  rebuilt classes included), as errdefs.

With the json result serializer Celery stores an exception as its class name, module
and ``args``, and rebuilds it on the caller with ``cls(*args)`` (see
``celery-redis-locks.md`` §1). The errdefs classes survive that as themselves when
``ingestq.errdefs`` is imported in the caller. Otherwise the caller may get:

* a class Celery synthesised, with the same name, in module ``celery.exceptions``
  (module not imported) or ``celery.backends.base`` (module not recorded);
* a ``celery.utils.serialization.UnpickleableExceptionWrapper``;
* any other exception, including a plain ``Exception`` when the constructor failed or
  a ``SystemExit`` written into the backend by someone else.

Nothing here ever imports or constructs a class that its input names: a tampered meta
can only ever yield an errdefs kind.

Imports errdefs and the job records' error field helpers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from ingestq import errdefs
from ingestq.jobs.records import decode_error_field

#: The module names Celery records for errdefs kinds (``ingestq.errdefs`` since the
#: package was renamed; plain ``errdefs`` in results written before).
ERRDEFS_MODULES: Final = frozenset({"ingestq.errdefs", "errdefs"})

#: Modules of the classes that Celery's ``exception_to_python`` synthesises.
_SYNTHESISED_MODULES: Final = frozenset({"celery.exceptions", "celery.backends.base"})


def _kind_named(name: object) -> type[errdefs.ErrdefsError] | None:
    """The registered kind called ``name`` (``NotImplemented`` being Unimplemented)."""
    if not isinstance(name, str):
        return None
    return errdefs.KINDS.get(name) or (errdefs.Unimplemented if name == "NotImplemented" else None)


def _rebuild(kind: type[errdefs.ErrdefsError], args: Sequence[object]) -> errdefs.ErrdefsError:
    """``kind(message, details)`` from the ``args`` an errdefs error was stored with."""
    first = args[0] if args else ""
    message = first if isinstance(first, str) else str(first)
    second = args[1] if len(args) > 1 else None
    details = (
        {str(key): str(value) for key, value in second.items()}
        if isinstance(second, Mapping)
        else None
    )
    return kind(message, details)


def encode(err: BaseException) -> errdefs.ErrdefsError:
    """``err`` as the bare registered errdefs kind with its message and details: what a
    task raises (``raise encode(e) from None``) so the result stores that class."""
    e = errdefs.from_exception(err)
    return errdefs.KINDS[e.name](e.message, e.details)


def error_from_celery_exc(obj: object) -> errdefs.ErrdefsError:
    """The errdefs error described by Celery's stored exception dict
    (``exc_type``/``exc_message``/``exc_module``), decoded by registry lookup only:
    an errdefs kind from an errdefs module is rebuilt with its message and details;
    anything else (any class, any module) is Unknown carrying ``<type>: <message>``."""
    if not isinstance(obj, Mapping):
        return errdefs.Unknown(f"job failed: {obj!r}"[:500])
    exc_type = obj.get("exc_type")
    args = obj.get("exc_message")
    if not isinstance(args, list | tuple):
        args = [args] if args is not None else []
    kind = _kind_named(exc_type) if obj.get("exc_module") in ERRDEFS_MODULES else None
    if kind is not None:
        return _rebuild(kind, args)
    message = args[0] if args and isinstance(args[0], str) else (str(args[0]) if args else "")
    name = exc_type if isinstance(exc_type, str) else "error"
    return errdefs.Unknown(f"{name}: {message}" if message else name)


def error_from_meta(
    job_id: str, meta: Mapping[str, Any] | None, record_error: str | None
) -> errdefs.ErrdefsError:
    """The error of job ``job_id`` whose Celery meta is ``meta``: Canceled when it was
    revoked; for a failure the job record's error record (``record_error``) when there
    is one; else (failures, and the reason of a retry) Celery's stored exception.
    Raises InvalidArgument naming the job for a malformed (tampered) error record: what
    the job failed with cannot be told then."""
    status = meta.get("status") if meta is not None else None
    if status == "REVOKED":
        return errdefs.Canceled(f"job {job_id} canceled")
    stored = decode_error_field(job_id, record_error) if status == "FAILURE" else None
    if stored is not None:
        return stored
    return error_from_celery_exc(meta.get("result") if meta is not None else None)


def _is_unpickleable_wrapper(exc: BaseException) -> bool:
    cls = type(exc)
    return cls.__name__ == "UnpickleableExceptionWrapper" and cls.__module__.startswith("celery.")


def normalize(exc: BaseException) -> errdefs.ErrdefsError:
    """The errdefs error that ``exc``, as handed back by a Celery result, stands for.

    * an errdefs error: ``exc`` itself;
    * a class Celery synthesised (module ``celery.exceptions`` or
      ``celery.backends.base``) named after a registered kind: that kind, rebuilt from
      ``exc.args`` (message and details);
    * a Celery ``UnpickleableExceptionWrapper`` of a registered kind: that kind,
      rebuilt from its ``exc_args``;
    * anything else: ``errdefs.from_exception(exc)`` (Unknown unless it has a built-in
      kind, with its message preserved).

    Never raises and never imports or constructs anything outside the registry.
    """
    if isinstance(exc, errdefs.ErrdefsError):
        return exc
    kind: type[errdefs.ErrdefsError] | None = None
    args: Sequence[object] = exc.args
    if type(exc).__module__ in _SYNTHESISED_MODULES:
        kind = _kind_named(type(exc).__name__)
    elif _is_unpickleable_wrapper(exc):
        name = getattr(exc, "exc_cls_name", None)
        wrapped_args = getattr(exc, "exc_args", None)
        if isinstance(name, str) and isinstance(wrapped_args, tuple | list):
            kind = _kind_named(name)
            args = wrapped_args
    if kind is None:
        return errdefs.from_exception(exc)
    rebuilt = _rebuild(kind, args)
    rebuilt.__cause__ = exc
    return rebuilt


__all__ = [
    "ERRDEFS_MODULES",
    "encode",
    "error_from_celery_exc",
    "error_from_meta",
    "normalize",
]
