"""Turn whatever a Celery result gives back into an errdefs error.

With the json result serializer Celery stores an exception as its class name, module
and ``args``, and rebuilds it on the caller with ``cls(*args)`` (see
``celery-redis-locks.md`` §1). The errdefs classes survive that as themselves when
``errdefs`` is imported in the caller. Otherwise the caller may get:

* a class Celery synthesised, with the same name, in module ``celery.exceptions``
  (module not imported) or ``celery.backends.base`` (module not recorded);
* a ``celery.utils.serialization.UnpickleableExceptionWrapper``;
* any other exception, including a plain ``Exception`` when the constructor failed or
  a ``SystemExit`` written into the backend by someone else.

``normalize`` maps all of these onto the registry and never imports anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from ingestq.errdefs._classify import from_exception
from ingestq.errdefs._kinds import ErrdefsError, lookup_name

#: Modules of the classes that Celery's ``exception_to_python`` synthesises.
_SYNTHESISED_MODULES: Final = frozenset({"celery.exceptions", "celery.backends.base"})


def _rebuild(kind: type[ErrdefsError], args: Sequence[object]) -> ErrdefsError:
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


def _is_unpickleable_wrapper(exc: BaseException) -> bool:
    cls = type(exc)
    return cls.__name__ == "UnpickleableExceptionWrapper" and cls.__module__.startswith("celery.")


def normalize(exc: BaseException) -> ErrdefsError:
    """The errdefs error that ``exc``, as handed back by a Celery result, stands for.

    * an errdefs error: ``exc`` itself;
    * a class Celery synthesised (module ``celery.exceptions`` or
      ``celery.backends.base``) named after a registered kind: that kind, rebuilt from
      ``exc.args`` (message and details);
    * a Celery ``UnpickleableExceptionWrapper`` of a registered kind: that kind,
      rebuilt from its ``exc_args``;
    * anything else: ``from_exception(exc)`` (Unknown unless it has a built-in kind,
      with its message preserved).

    Never raises and never imports or constructs anything outside the registry.
    """
    if isinstance(exc, ErrdefsError):
        return exc
    kind: type[ErrdefsError] | None = None
    args: Sequence[object] = exc.args
    if type(exc).__module__ in _SYNTHESISED_MODULES:
        kind = lookup_name(type(exc).__name__)
    elif _is_unpickleable_wrapper(exc):
        name = getattr(exc, "exc_cls_name", None)
        wrapped_args = getattr(exc, "exc_args", None)
        if isinstance(name, str) and isinstance(wrapped_args, tuple | list):
            kind = lookup_name(name)
            args = wrapped_args
    if kind is None:
        return from_exception(exc)
    rebuilt = _rebuild(kind, args)
    rebuilt.__cause__ = exc
    return rebuilt
