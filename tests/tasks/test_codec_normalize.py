"""normalize (tasks/codec.py): what a Celery result hands back, as errdefs."""

from __future__ import annotations

import pytest
from celery.utils.serialization import UnpickleableExceptionWrapper, create_exception_cls

from ingestq import errdefs
from ingestq.tasks.codec import normalize

KINDS = list(errdefs.KINDS.values())
IDS = list(errdefs.KINDS)


class RefLocked(errdefs.Unavailable):
    """A caller's refinement of Unavailable."""


class NotFound(Exception):
    """Some other library's NotFound, unrelated to errdefs."""


def test_errdefs_errors_are_returned_as_they_are() -> None:
    err = RefLocked("ref x locked")
    assert normalize(err) is err
    plain = errdefs.NotFound("x")
    assert normalize(plain) is plain


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
@pytest.mark.parametrize("module", ["celery.exceptions", "celery.backends.base"])
def test_synthesised_class_is_rebuilt_from_registry(
    cls: type[errdefs.ErrdefsError], module: str
) -> None:
    synthesised = create_exception_cls(cls.__name__, module)
    assert synthesised is not cls and synthesised.__module__ == module
    exc = synthesised("content x", {"digest": "sha256:ab"})
    back = normalize(exc)
    assert type(back) is cls
    assert str(back) == str(cls("content x"))
    assert back.details == {"digest": "sha256:ab"}
    assert back.__cause__ is exc


def test_synthesised_alias_name_is_rebuilt() -> None:
    exc = create_exception_cls("NotImplemented", "celery.exceptions")("ftp")
    assert type(normalize(exc)) is errdefs.Unimplemented


def test_synthesised_class_with_odd_args() -> None:
    cls = create_exception_cls("NotFound", "celery.exceptions")
    assert str(normalize(cls())) == "not found"
    odd = normalize(cls(42, "not-a-dict"))
    assert (odd.message, odd.details) == ("42", {})


def test_synthesised_class_not_in_registry_is_unknown() -> None:
    exc = create_exception_cls("RefLocked", "celery.exceptions")("ref x locked")
    back = normalize(exc)
    assert type(back) is errdefs.Unknown
    assert back.message == "ref x locked"


def test_foreign_class_with_a_kind_name_is_not_trusted() -> None:
    back = normalize(NotFound("elsewhere"))
    assert type(back) is errdefs.Unknown
    assert back.message == "elsewhere"


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_unpickleable_wrapper_is_rebuilt_by_class_name(cls: type[errdefs.ErrdefsError]) -> None:
    wrapper = UnpickleableExceptionWrapper(
        "errdefs", cls.__name__, ("content x", {"k": "v"}), "NotFound('content x')"
    )
    back = normalize(wrapper)
    assert (type(back), back.message, back.details) == (cls, "content x", {"k": "v"})


def test_unpickleable_wrapper_of_other_class_is_unknown_with_text() -> None:
    wrapper = UnpickleableExceptionWrapper("mymod", "Weird", ("a",), "Weird('a')")
    back = normalize(wrapper)
    assert type(back) is errdefs.Unknown
    assert back.message == "Weird('a')"


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (SystemExit("exit now"), "exit now"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (Exception("<class 'errdefs.NotFound'>(['only-one-arg'])"), None),
        (ValueError("v"), "v"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_anything_else_becomes_unknown_and_is_returned_not_raised(
    exc: BaseException, message: str | None
) -> None:
    back = normalize(exc)
    assert type(back) is errdefs.Unknown
    assert back.message == (message if message is not None else str(exc))


def test_builtin_kinds_still_apply() -> None:
    assert type(normalize(FileNotFoundError(2, "gone"))) is errdefs.NotFound
