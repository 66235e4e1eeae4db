"""Classification (``is_*``, ``resolve``) and wrapping (``wrap``, ``from_exception``).

An error *is* a kind when it, or any exception reachable from it, is that kind. The
walk is depth-first and outermost first; from each exception it visits, in order:

1. ``__cause__`` (the explicit ``raise ... from`` wrap, like Go's ``%w``);
2. the members of a ``BaseExceptionGroup``, in order;
3. ``__context__``, unless ``__suppress_context__`` is set.

Each exception is visited once, so cyclic chains terminate.

Besides the errdefs classes, a few built-in exceptions have a kind:

=============================================================  ==================
built-in                                                       kind
=============================================================  ==================
``asyncio.CancelledError``, ``concurrent.futures.CancelledError``  Canceled
``TimeoutError`` (and subclasses, e.g. ``filelock.Timeout``)   DeadlineExceeded
``FileNotFoundError``                                          NotFound
``PermissionError``                                            PermissionDenied
``OSError`` with errno ENOSPC, EDQUOT or EFBIG                 ResourceExhausted
=============================================================  ==================
"""

from __future__ import annotations

import concurrent.futures
import errno
import sys
from collections.abc import Iterator
from typing import Final

from ingestq.errdefs._kinds import (
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
    canonical_kind,
)


def _cancelled_types() -> tuple[type[BaseException], ...]:
    """The cancellation exceptions: ``concurrent.futures``' and, once a module loaded
    asyncio (only then can one of its errors exist), asyncio's; asyncio is not imported
    here, so the command line starts without it."""
    aio = sys.modules.get("asyncio.exceptions")
    cancelled = getattr(aio, "CancelledError", None)
    if isinstance(cancelled, type) and issubclass(cancelled, BaseException):
        return (cancelled, concurrent.futures.CancelledError)
    return (concurrent.futures.CancelledError,)


_EXHAUSTED_ERRNOS: Final[frozenset[int]] = frozenset(
    code
    for code in (getattr(errno, name, None) for name in ("ENOSPC", "EDQUOT", "EFBIG"))
    if code is not None
)


def walk(err: BaseException | None) -> Iterator[BaseException]:
    """Yield ``err`` and every exception reachable from it, depth-first, outermost
    first (cause, then group members, then unsuppressed context), each exactly once."""
    if err is None:
        return
    seen: set[int] = set()
    stack: list[BaseException] = [err]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        children: list[BaseException] = []
        if node.__cause__ is not None:
            children.append(node.__cause__)
        if isinstance(node, BaseExceptionGroup):
            children.extend(node.exceptions)
        if node.__context__ is not None and not node.__suppress_context__:
            children.append(node.__context__)
        stack.extend(reversed(children))


def builtin_kind(err: BaseException) -> type[ErrdefsError] | None:
    """The kind of a built-in exception per the module's table, or None."""
    if isinstance(err, _cancelled_types()):
        return Canceled
    if isinstance(err, TimeoutError):
        return DeadlineExceeded
    if isinstance(err, FileNotFoundError):
        return NotFound
    if isinstance(err, PermissionError):
        return PermissionDenied
    if isinstance(err, OSError) and err.errno in _EXHAUSTED_ERRNOS:
        return ResourceExhausted
    return None


def _own_kinds(err: BaseException) -> Iterator[type[ErrdefsError]]:
    """The kinds of ``err`` itself, not looking at its chain: its errdefs kind first."""
    if isinstance(err, ErrdefsError):
        yield canonical_kind(type(err))
    builtin = builtin_kind(err)
    if builtin is not None:
        yield builtin


def _is(err: BaseException | None, kind: type[ErrdefsError]) -> bool:
    """Whether any exception in ``err``'s chain has ``kind`` (a subclass of it counts,
    and a bare ``ErrdefsError`` counts as Unknown)."""
    for node in walk(err):
        if isinstance(node, kind) or builtin_kind(node) is kind:
            return True
        if isinstance(node, ErrdefsError) and canonical_kind(type(node)) is kind:
            return True
    return False


def resolve(err: BaseException) -> type[ErrdefsError]:
    """The kind of ``err``: the first kind found walking its chain (outermost first,
    built-in mapping included), or Unknown if there is none. Always a ``KINDS`` class,
    never a caller's subclass."""
    for node in walk(err):
        for kind in _own_kinds(node):
            return kind
    return Unknown


def safe_str(err: BaseException) -> str:
    """``str(err)``, or a placeholder naming the class if its ``__str__`` raises."""
    try:
        return str(err)
    except Exception:
        return f"<{type(err).__name__}: str() failed>"


def describe(err: BaseException) -> str:
    """``safe_str(err)``, or the class name when that is empty."""
    return safe_str(err) or type(err).__name__


def wrap(err: BaseException, context: str) -> ErrdefsError:
    """A new error of ``resolve(err)``'s kind reading ``"<context>: <err>"``, with
    ``err`` as its ``__cause__`` and, if ``err`` is an errdefs error, its details.

    ``wrap(NotFound("content x"), "failed commit")`` prints ``failed commit: content x:
    not found``. An empty ``context`` leaves the text of ``err`` unchanged.
    """
    kind = resolve(err)
    text = describe(err)
    details = err.details if isinstance(err, ErrdefsError) else None
    wrapped = kind(f"{context}: {text}" if context else text, details)
    wrapped.__cause__ = err
    return wrapped


def from_exception(err: BaseException) -> ErrdefsError:
    """``err`` itself if it is an errdefs error; otherwise a new error of
    ``resolve(err)``'s kind whose message is ``str(err)`` (or the class name when that
    is empty), with ``err`` as its ``__cause__``."""
    if isinstance(err, ErrdefsError):
        return err
    converted = resolve(err)(describe(err))
    converted.__cause__ = err
    return converted


def is_canceled(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds a Canceled error or a ``CancelledError``."""
    return _is(err, Canceled)


def is_unknown(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds an explicit Unknown errdefs error (a plain
    exception of no kind does not count)."""
    return _is(err, Unknown)


def is_invalid_argument(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds an InvalidArgument error."""
    return _is(err, InvalidArgument)


def is_deadline_exceeded(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds a DeadlineExceeded error or a ``TimeoutError``."""
    return _is(err, DeadlineExceeded)


def is_not_found(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds a NotFound error or a ``FileNotFoundError``."""
    return _is(err, NotFound)


def is_already_exists(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds an AlreadyExists error."""
    return _is(err, AlreadyExists)


def is_permission_denied(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds a PermissionDenied error or a ``PermissionError``."""
    return _is(err, PermissionDenied)


def is_resource_exhausted(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds a ResourceExhausted error or an ``OSError``
    with errno ENOSPC, EDQUOT or EFBIG."""
    return _is(err, ResourceExhausted)


def is_failed_precondition(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds a FailedPrecondition error."""
    return _is(err, FailedPrecondition)


def is_aborted(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds an Aborted error."""
    return _is(err, Aborted)


def is_out_of_range(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds an OutOfRange error."""
    return _is(err, OutOfRange)


def is_not_implemented(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds an Unimplemented (NotImplemented) error."""
    return _is(err, Unimplemented)


def is_internal(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds an Internal error."""
    return _is(err, Internal)


def is_unavailable(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds an Unavailable error."""
    return _is(err, Unavailable)


def is_data_loss(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds a DataLoss error."""
    return _is(err, DataLoss)


def is_unauthenticated(err: BaseException | None) -> bool:
    """Whether ``err`` or its chain holds an Unauthenticated error."""
    return _is(err, Unauthenticated)
