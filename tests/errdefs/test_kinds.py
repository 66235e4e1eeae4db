"""The kind classes (errdefs/_kinds.py): attributes, text rules, args shape, pickle."""

from __future__ import annotations

import pickle

import pytest

from ingestq import errdefs

KINDS = list(errdefs.KINDS.values())
IDS = list(errdefs.KINDS)

EXPECTED = [
    # class, name, kind text, gRPC code
    (errdefs.Canceled, "Canceled", "context canceled", 1),
    (errdefs.Unknown, "Unknown", "unknown", 2),
    (errdefs.InvalidArgument, "InvalidArgument", "invalid argument", 3),
    (errdefs.DeadlineExceeded, "DeadlineExceeded", "context deadline exceeded", 4),
    (errdefs.NotFound, "NotFound", "not found", 5),
    (errdefs.AlreadyExists, "AlreadyExists", "already exists", 6),
    (errdefs.PermissionDenied, "PermissionDenied", "permission denied", 7),
    (errdefs.ResourceExhausted, "ResourceExhausted", "resource exhausted", 8),
    (errdefs.FailedPrecondition, "FailedPrecondition", "failed precondition", 9),
    (errdefs.Aborted, "Aborted", "aborted", 10),
    (errdefs.OutOfRange, "OutOfRange", "out of range", 11),
    (errdefs.Unimplemented, "Unimplemented", "not implemented", 12),
    (errdefs.Internal, "Internal", "internal", 13),
    (errdefs.Unavailable, "Unavailable", "unavailable", 14),
    (errdefs.DataLoss, "DataLoss", "data loss", 15),
    (errdefs.Unauthenticated, "Unauthenticated", "unauthorized", 16),
]


class RefLocked(errdefs.Unavailable):
    """A caller's refinement of a kind (module level, so it pickles)."""


@pytest.mark.parametrize(("cls", "name", "kind", "code"), EXPECTED, ids=[e[1] for e in EXPECTED])
def test_kind_attributes_match_containerd_and_grpc(
    cls: type[errdefs.ErrdefsError], name: str, kind: str, code: int
) -> None:
    assert (cls.name, cls.kind, cls.grpc_code) == (name, kind, code)
    assert cls.__name__ == name
    assert issubclass(cls, errdefs.ErrdefsError)


def test_registry_holds_every_kind_once_in_code_order() -> None:
    assert list(errdefs.KINDS.items()) == [(e[1], e[0]) for e in EXPECTED]
    assert len({cls.grpc_code for cls in KINDS}) == 16


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        errdefs.KINDS["Evil"] = errdefs.Unknown  # type: ignore[index]


def test_not_implemented_is_an_alias_of_unimplemented() -> None:
    assert errdefs.NotImplemented is errdefs.Unimplemented
    assert str(errdefs.NotImplemented("fetch over ftp")) == "fetch over ftp: not implemented"


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_kinds_are_distinct_classes(cls: type[errdefs.ErrdefsError]) -> None:
    others = [other for other in KINDS if other is not cls]
    assert not any(isinstance(cls("x"), other) for other in others)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("", "not found"),
        ("not found", "not found"),
        ("content sha256:ab", "content sha256:ab: not found"),
        ("content sha256:ab: not found", "content sha256:ab: not found"),
        ("blob not found", "blob not found: not found"),
        ("a: not found: b", "a: not found: b: not found"),
        ("x: unknown", "x: unknown: not found"),
    ],
)
def test_str_appends_kind_text_unless_present(message: str, expected: str) -> None:
    assert str(errdefs.NotFound(message)) == expected


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
@pytest.mark.parametrize("message", ["", "ctx", "a: b", "x: not found", "multi\nline %s"])
def test_str_is_idempotent(cls: type[errdefs.ErrdefsError], message: str) -> None:
    once = str(cls(message))
    assert str(cls(once)) == once
    assert once == cls.kind or once.endswith(": " + cls.kind)


def test_args_are_exactly_the_constructor_args() -> None:
    assert errdefs.NotFound().args == ("", None)
    assert errdefs.NotFound("m").args == ("m", None)
    assert errdefs.NotFound("m", {}).args == ("m", None)
    assert errdefs.NotFound("m", {"k": "v"}).args == ("m", {"k": "v"})


def test_details_are_copied_on_construction_and_on_read() -> None:
    given = {"digest": "sha256:ab"}
    err = errdefs.NotFound("m", given)
    given["digest"] = "changed"
    assert err.details == {"digest": "sha256:ab"}
    err.details["digest"] = "mutated"
    assert err.details == {"digest": "sha256:ab"}


def test_message_and_details_properties() -> None:
    err = errdefs.Unavailable("ref layer-1 locked", {"ref": "layer-1"})
    assert err.message == "ref layer-1 locked"
    assert err.details == {"ref": "layer-1"}
    assert errdefs.Unavailable().message == ""
    assert errdefs.Unavailable().details == {}


def test_repr_shows_message_and_details() -> None:
    assert repr(errdefs.NotFound("m")) == "NotFound('m')"
    assert repr(errdefs.NotFound("m", {"k": "v"})) == "NotFound('m', {'k': 'v'})"


def test_bare_base_reads_as_unknown() -> None:
    err = errdefs.ErrdefsError("boom")
    assert str(err) == "boom: unknown"
    assert (err.name, err.grpc_code) == ("Unknown", 2)


@pytest.mark.parametrize("cls", [errdefs.ErrdefsError, *KINDS])
def test_public_module_is_ingestq_errdefs(cls: type[errdefs.ErrdefsError]) -> None:
    assert cls.__module__ == "ingestq.errdefs"
    assert getattr(errdefs, cls.__qualname__) is cls


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_pickle_round_trip_keeps_class_args_and_text(cls: type[errdefs.ErrdefsError]) -> None:
    for err in (cls(), cls("ctx"), cls("ctx", {"k": "v"})):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is cls
        assert back.args == err.args
        assert str(back) == str(err)
        assert back.details == err.details


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_rebuild_from_args(cls: type[errdefs.ErrdefsError]) -> None:
    err = cls("ctx", {"k": "v"})
    back = type(err)(*err.args)
    assert (type(back), back.args, str(back)) == (cls, err.args, str(err))


def test_caller_subclass_keeps_shape_and_pickles() -> None:
    err = RefLocked("ref x locked", {"ref": "x"})
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is RefLocked
    assert str(back) == "ref x locked: unavailable"
    assert back.details == {"ref": "x"}
