"""Classification and wrapping (errdefs/_classify.py)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import itertools
from collections.abc import Callable

import pytest

from ingestq import errdefs

Predicate = Callable[[BaseException | None], bool]

PREDICATES: dict[type[errdefs.ErrdefsError], Predicate] = {
    errdefs.Canceled: errdefs.is_canceled,
    errdefs.Unknown: errdefs.is_unknown,
    errdefs.InvalidArgument: errdefs.is_invalid_argument,
    errdefs.DeadlineExceeded: errdefs.is_deadline_exceeded,
    errdefs.NotFound: errdefs.is_not_found,
    errdefs.AlreadyExists: errdefs.is_already_exists,
    errdefs.PermissionDenied: errdefs.is_permission_denied,
    errdefs.ResourceExhausted: errdefs.is_resource_exhausted,
    errdefs.FailedPrecondition: errdefs.is_failed_precondition,
    errdefs.Aborted: errdefs.is_aborted,
    errdefs.OutOfRange: errdefs.is_out_of_range,
    errdefs.Unimplemented: errdefs.is_not_implemented,
    errdefs.Internal: errdefs.is_internal,
    errdefs.Unavailable: errdefs.is_unavailable,
    errdefs.DataLoss: errdefs.is_data_loss,
    errdefs.Unauthenticated: errdefs.is_unauthenticated,
}
KINDS = list(errdefs.KINDS.values())
IDS = list(errdefs.KINDS)


class RefLocked(errdefs.Unavailable):
    """A caller's refinement of Unavailable."""


class LockTimeout(errdefs.Unavailable, TimeoutError):
    """An errdefs kind that is also a built-in with a kind of its own."""


def chain(*errors: BaseException) -> BaseException:
    """errors[0] caused by errors[1] caused by ... (as ``raise a from b`` would)."""
    for outer, inner in itertools.pairwise(errors):
        outer.__cause__ = inner
    return errors[0]


def test_every_kind_has_a_predicate() -> None:
    assert set(PREDICATES) == set(KINDS)


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_each_predicate_matches_its_kind_only(cls: type[errdefs.ErrdefsError]) -> None:
    err = cls("x")
    assert {kind for kind, pred in PREDICATES.items() if pred(err)} == {cls}


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_predicates_are_false_for_none(cls: type[errdefs.ErrdefsError]) -> None:
    assert PREDICATES[cls](None) is False


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_kind_found_through_deep_cause_chain(cls: type[errdefs.ErrdefsError]) -> None:
    err = chain(*[RuntimeError(f"layer {i}") for i in range(50)], cls("root"))
    assert PREDICATES[cls](err)
    assert errdefs.resolve(err) is cls


def test_kind_found_through_raise_from() -> None:
    with pytest.raises(RuntimeError) as info:
        try:
            raise errdefs.NotFound("blob")
        except errdefs.NotFound as e:
            raise RuntimeError("fetch failed") from e
    assert errdefs.is_not_found(info.value)
    assert errdefs.resolve(info.value) is errdefs.NotFound


def test_kind_found_through_implicit_context() -> None:
    with pytest.raises(RuntimeError) as info:
        try:
            raise errdefs.AlreadyExists("blob")
        except errdefs.AlreadyExists:
            raise RuntimeError("while handling")  # noqa: B904 - the implicit context is the point
    assert info.value.__context__ is not None and not info.value.__suppress_context__
    assert errdefs.is_already_exists(info.value)


def test_suppressed_context_is_not_searched() -> None:
    with pytest.raises(RuntimeError) as info:
        try:
            raise errdefs.AlreadyExists("blob")
        except errdefs.AlreadyExists:
            raise RuntimeError("hidden") from None
    assert info.value.__context__ is not None
    assert not errdefs.is_already_exists(info.value)
    assert errdefs.resolve(info.value) is errdefs.Unknown


def test_raise_from_searches_cause_not_context() -> None:
    with pytest.raises(RuntimeError) as info:
        try:
            raise errdefs.AlreadyExists("blob")
        except errdefs.AlreadyExists:
            raise RuntimeError("x") from KeyError("k")
    assert isinstance(info.value.__context__, errdefs.AlreadyExists)
    assert not errdefs.is_already_exists(info.value)


def test_kind_found_in_nested_exception_groups() -> None:
    inner = ExceptionGroup("inner", [ValueError("v"), errdefs.DataLoss("blob corrupt")])
    outer = BaseExceptionGroup("outer", [KeyError("k"), inner, KeyboardInterrupt()])
    assert errdefs.is_data_loss(outer)
    assert errdefs.resolve(outer) is errdefs.DataLoss
    assert not errdefs.is_not_found(outer)


def test_group_members_searched_through_their_own_chains() -> None:
    member = chain(RuntimeError("r"), errdefs.OutOfRange("offset 9"))
    group = BaseExceptionGroup("g", [ValueError("v"), member])
    assert errdefs.is_out_of_range(group)


def cause_cycle(a: BaseException, b: BaseException) -> None:
    a.__cause__, b.__cause__ = b, a


def context_cycle(a: BaseException, b: BaseException) -> None:
    a.__context__, b.__context__ = b, a


def self_cycles(a: BaseException, b: BaseException) -> None:
    a.__cause__, b.__context__ = a, b


def mixed_cycle(a: BaseException, b: BaseException) -> None:
    a.__cause__, b.__context__ = b, a


@pytest.mark.parametrize("make_cycle", [cause_cycle, context_cycle, self_cycles, mixed_cycle])
def test_cycles_terminate(make_cycle: Callable[[BaseException, BaseException], None]) -> None:
    a, b = RuntimeError("a"), ValueError("b")
    make_cycle(a, b)
    assert not errdefs.is_not_found(a)
    assert errdefs.resolve(a) is errdefs.Unknown


def test_cycle_still_finds_kind() -> None:
    a, b = RuntimeError("a"), errdefs.Aborted("lease lost")
    a.__cause__, b.__context__ = b, a
    assert errdefs.is_aborted(a)
    assert errdefs.is_aborted(b)


def test_group_containing_itself_through_cause_terminates() -> None:
    member = RuntimeError("m")
    group = ExceptionGroup("g", [member])
    member.__cause__ = group
    assert not errdefs.is_internal(group)


def test_very_deep_chain_does_not_recurse() -> None:
    errors = [RuntimeError(str(i)) for i in range(20_000)]
    err = chain(*errors, errdefs.Internal("bottom"))
    assert errdefs.is_internal(err)


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (asyncio.CancelledError(), errdefs.Canceled),
        (concurrent.futures.CancelledError(), errdefs.Canceled),
        (TimeoutError("t"), errdefs.DeadlineExceeded),
        (concurrent.futures.TimeoutError(), errdefs.DeadlineExceeded),
        (OSError(errno.ETIMEDOUT, "timed out"), errdefs.DeadlineExceeded),
        (FileNotFoundError(errno.ENOENT, "no such file", "/x"), errdefs.NotFound),
        (OSError(errno.ENOENT, "no such file"), errdefs.NotFound),
        (PermissionError(errno.EACCES, "denied"), errdefs.PermissionDenied),
        (OSError(errno.ENOSPC, "no space left"), errdefs.ResourceExhausted),
        (OSError(errno.EDQUOT, "quota"), errdefs.ResourceExhausted),
        (OSError(errno.EFBIG, "too big"), errdefs.ResourceExhausted),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_builtin_exceptions_have_kinds(
    err: BaseException, kind: type[errdefs.ErrdefsError]
) -> None:
    assert PREDICATES[kind](err)
    assert errdefs.resolve(err) is kind
    assert PREDICATES[kind](chain(RuntimeError("wrapped"), err))


@pytest.mark.parametrize(
    "err",
    [
        ValueError("v"),
        OSError(errno.EIO, "io"),
        KeyError("k"),
        NotImplementedError(),
        SystemExit(1),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_exceptions_have_no_kind(err: BaseException) -> None:
    assert not any(pred(err) for pred in PREDICATES.values())
    assert errdefs.resolve(err) is errdefs.Unknown


def test_is_unknown_counts_explicit_unknown_and_bare_base_only() -> None:
    assert errdefs.is_unknown(errdefs.Unknown("x"))
    assert errdefs.is_unknown(errdefs.ErrdefsError("x"))
    assert errdefs.is_unknown(chain(RuntimeError("r"), errdefs.Unknown("x")))
    assert not errdefs.is_unknown(ValueError("x"))


def test_subclass_classifies_and_resolves_as_its_kind() -> None:
    err = RefLocked("ref x locked")
    assert errdefs.is_unavailable(err)
    assert errdefs.resolve(err) is errdefs.Unavailable


def test_errdefs_kind_wins_over_builtin_on_same_exception() -> None:
    err = LockTimeout("ref x")
    assert errdefs.resolve(err) is errdefs.Unavailable
    assert errdefs.is_unavailable(err)
    assert errdefs.is_deadline_exceeded(err)


def test_resolve_takes_outermost_kind() -> None:
    err = chain(errdefs.InvalidArgument("bad ref"), errdefs.NotFound("blob"))
    assert errdefs.resolve(err) is errdefs.InvalidArgument
    assert errdefs.is_invalid_argument(err) and errdefs.is_not_found(err)


def test_resolve_order_is_cause_then_members_then_context() -> None:
    group = ExceptionGroup("g", [errdefs.NotFound("member")])
    group.__context__ = errdefs.Aborted("context")
    assert errdefs.resolve(group) is errdefs.NotFound
    group.__cause__ = errdefs.DataLoss("cause")
    assert errdefs.resolve(group) is errdefs.DataLoss
    plain = RuntimeError("r")
    plain.__context__ = errdefs.Aborted("context")
    assert errdefs.resolve(plain) is errdefs.Aborted


def test_resolve_takes_first_group_member() -> None:
    group = ExceptionGroup("g", [ValueError("v"), errdefs.NotFound("a"), errdefs.Internal("b")])
    assert errdefs.resolve(group) is errdefs.NotFound


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_wrap_keeps_kind_and_reads_context_first(cls: type[errdefs.ErrdefsError]) -> None:
    inner = cls("content x", {"digest": "sha256:ab"})
    wrapped = errdefs.wrap(inner, "failed commit")
    assert type(wrapped) is cls
    assert str(wrapped) == f"failed commit: {inner}"
    assert wrapped.__cause__ is inner
    assert wrapped.__suppress_context__
    assert wrapped.details == {"digest": "sha256:ab"}
    assert PREDICATES[cls](wrapped)


def test_wrap_text_matches_containerd() -> None:
    wrapped = errdefs.wrap(errdefs.NotFound("content x"), "failed commit")
    assert str(wrapped) == "failed commit: content x: not found"
    twice = errdefs.wrap(wrapped, "pull")
    assert str(twice) == "pull: failed commit: content x: not found"
    assert errdefs.wrap(errdefs.NotFound(), "blob").message == "blob: not found"


def test_wrap_of_subclass_gives_the_registry_kind() -> None:
    wrapped = errdefs.wrap(RefLocked("ref x locked"), "writer")
    assert type(wrapped) is errdefs.Unavailable
    assert str(wrapped) == "writer: ref x locked: unavailable"


def test_wrap_non_errdefs_uses_resolved_kind() -> None:
    boom = errdefs.wrap(ValueError("boom"), "ctx")
    assert type(boom) is errdefs.Unknown
    assert str(boom) == "ctx: boom: unknown"
    missing = errdefs.wrap(FileNotFoundError(errno.ENOENT, "No such file", "/x"), "open")
    assert type(missing) is errdefs.NotFound
    assert str(missing) == "open: [Errno 2] No such file: '/x': not found"
    deep = errdefs.wrap(chain(RuntimeError("r"), errdefs.Unavailable("locked")), "ctx")
    assert type(deep) is errdefs.Unavailable
    assert deep.details == {}


def test_wrap_with_empty_context_keeps_text() -> None:
    inner = errdefs.NotFound("x")
    assert str(errdefs.wrap(inner, "")) == str(inner)


def test_wrap_empty_text_uses_class_name() -> None:
    assert str(errdefs.wrap(ValueError(), "ctx")) == "ctx: ValueError: unknown"


def test_from_exception_returns_errdefs_errors_themselves() -> None:
    err = RefLocked("x")
    assert errdefs.from_exception(err) is err


def test_from_exception_converts_others() -> None:
    err = ValueError("bad value")
    converted = errdefs.from_exception(err)
    assert type(converted) is errdefs.Unknown
    assert converted.message == "bad value"
    assert converted.__cause__ is err
    assert type(errdefs.from_exception(PermissionError("p"))) is errdefs.PermissionDenied
    cancelled = errdefs.from_exception(asyncio.CancelledError())
    assert type(cancelled) is errdefs.Canceled
    assert cancelled.message == "CancelledError"


def test_from_exception_survives_broken_str() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    converted = errdefs.from_exception(Broken())
    assert converted.message == "<Broken: str() failed>"
