"""The error record and its JSON form (errdefs/_record.py, errdefs/record.proto)."""

from __future__ import annotations

import json
import sys

import pytest
from google.protobuf import json_format

from ingestq import errdefs
from ingestq.errdefs import ErrorRecord

KINDS = list(errdefs.KINDS.values())
IDS = list(errdefs.KINDS)


def test_generated_module_imports_as_ingestq_errdefs_record_pb2() -> None:
    from ingestq.errdefs import record_pb2

    assert record_pb2.ErrorRecord is ErrorRecord
    assert ErrorRecord.DESCRIPTOR.full_name == "ingestq.errdefs.v1.ErrorRecord"
    assert record_pb2.DESCRIPTOR.name == "ingestq/errdefs/record.proto"
    fields = {f.name: (f.number, f.type) for f in ErrorRecord.DESCRIPTOR.fields}
    assert {name: number for name, (number, _) in fields.items()} == {
        "kind": 1,
        "code": 2,
        "message": 3,
        "details": 4,
    }


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_to_record_fields(cls: type[errdefs.ErrdefsError]) -> None:
    rec = errdefs.to_record(cls("content x", {"digest": "sha256:ab"}))
    assert rec.kind == cls.name
    assert rec.code == cls.grpc_code
    assert rec.message == f"content x: {cls.kind}"
    assert dict(rec.details) == {"digest": "sha256:ab"}


def test_to_record_of_other_exception_is_unknown_with_message() -> None:
    rec = errdefs.to_record(ValueError("bad thing"))
    assert (rec.kind, rec.code, rec.message, dict(rec.details)) == ("Unknown", 2, "bad thing", {})
    back = errdefs.from_record(rec)
    assert type(back) is errdefs.Unknown
    assert back.message == "bad thing"


def test_to_record_of_builtin_with_kind() -> None:
    rec = errdefs.to_record(FileNotFoundError(2, "No such file", "/x"))
    assert (rec.kind, rec.code) == ("NotFound", 5)
    assert rec.message == "[Errno 2] No such file: '/x'"


def test_to_record_escapes_lone_surrogates() -> None:
    err = errdefs.NotFound("file /data/\udcff", {"path\udcfe": "/data/\udcff"})
    rec = errdefs.to_record(err)
    assert rec.message == "file /data/\\udcff: not found"
    assert dict(rec.details) == {"path\\udcfe": "/data/\\udcff"}
    assert errdefs.record_from_json(errdefs.record_to_json(rec)) == rec


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
@pytest.mark.parametrize("message", ["", "ctx", "a: b", "not found", "%d {x}"])
def test_record_round_trip(cls: type[errdefs.ErrdefsError], message: str) -> None:
    err = cls(message, {"ref": "layer-1"})
    back = errdefs.from_record(errdefs.to_record(err))
    assert type(back) is cls
    assert str(back) == str(err)
    assert back.details == err.details


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_record_survives_binary_encoding(cls: type[errdefs.ErrdefsError]) -> None:
    err = errdefs.wrap(cls("blob", {"k": "v"}), "ctx")
    wire = errdefs.to_record(err).SerializeToString()
    back = errdefs.from_record(ErrorRecord.FromString(wire))
    assert (type(back), str(back), back.details) == (cls, str(err), {"k": "v"})


def test_json_form_is_documented_shape() -> None:
    err = errdefs.NotFound("content sha256:ab", {"ref": "layer-1", "digest": "sha256:ab"})
    text = errdefs.record_to_json(errdefs.to_record(err))
    assert text == (
        '{"kind":"NotFound","code":5,"message":"content sha256:ab: not found",'
        '"details":{"digest":"sha256:ab","ref":"layer-1"}}'
    )
    assert errdefs.to_json_dict(err) == json.loads(text)


def test_json_form_always_has_all_fields() -> None:
    assert errdefs.record_to_json(ErrorRecord()) == '{"kind":"","code":0,"message":"","details":{}}'


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_json_form_agrees_with_protobuf_json_format(cls: type[errdefs.ErrdefsError]) -> None:
    rec = errdefs.to_record(cls("x", {"b": "2", "a": "1"}))
    expected = json_format.MessageToDict(
        rec, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    assert json.loads(errdefs.record_to_json(rec)) == expected
    assert json_format.Parse(errdefs.record_to_json(rec), ErrorRecord()) == rec


def test_json_text_is_ascii() -> None:
    text = errdefs.record_to_json(errdefs.to_record(errdefs.NotFound("blob ümlaut ✓")))
    assert text.isascii()
    assert errdefs.from_record(errdefs.record_from_json(text)).message == "blob ümlaut ✓: not found"


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_json_round_trips(cls: type[errdefs.ErrdefsError]) -> None:
    err = errdefs.wrap(cls("blob", {"k": "v"}), "pull")
    via_text = errdefs.from_record(
        errdefs.record_from_json(errdefs.record_to_json(errdefs.to_record(err)))
    )
    via_dict = errdefs.from_json_dict(json.loads(json.dumps(errdefs.to_json_dict(err))))
    for back in (via_text, via_dict):
        assert (type(back), str(back), back.details) == (cls, str(err), {"k": "v"})


def test_record_from_json_accepts_bytes() -> None:
    rec = errdefs.record_from_json(b'{"kind":"Aborted","code":10,"message":"lease lost: aborted"}')
    assert type(errdefs.from_record(rec)) is errdefs.Aborted


def test_unknown_fields_are_ignored() -> None:
    err = errdefs.from_json_dict(
        {"kind": "NotFound", "code": 5, "message": "x: not found", "exc_module": "os"}
    )
    assert (type(err), str(err)) == (errdefs.NotFound, "x: not found")


@pytest.mark.parametrize(
    ("kind", "code", "expected"),
    [
        ("NotFound", 5, errdefs.NotFound),
        ("NotFound", 0, errdefs.NotFound),
        ("NotImplemented", 12, errdefs.Unimplemented),
        ("NotImplemented", 0, errdefs.Unimplemented),
        ("", 14, errdefs.Unavailable),
        ("Bogus", 6, errdefs.AlreadyExists),
        ("NotFound", 9, errdefs.FailedPrecondition),
        ("NotFound", 99, errdefs.Unknown),
        ("", 0, errdefs.Unknown),
        ("", 99, errdefs.Unknown),
        ("Bogus", 0, errdefs.Unknown),
        ("notfound", 0, errdefs.Unknown),
        ("ErrdefsError", 0, errdefs.Unknown),
    ],
)
def test_class_selection_rules(kind: str, code: int, expected: type[errdefs.ErrdefsError]) -> None:
    assert type(errdefs.from_record(ErrorRecord(kind=kind, code=code, message="m"))) is expected


@pytest.mark.parametrize(
    "kind",
    [
        "os.system",
        "builtins.SystemExit",
        "SystemExit",
        "KeyboardInterrupt",
        "__import__",
        "subprocess.Popen",
        "errdefs._kinds.NotFound",
        "NotFound.__class__",
        "__class__",
        "__builtins__",
        "ingestq_nonexistent_module.Boom",
    ],
)
@pytest.mark.parametrize("code", [0, 5, 12345])
def test_tampered_kind_never_leaves_the_registry(kind: str, code: int) -> None:
    before = set(sys.modules)
    err = errdefs.from_record(ErrorRecord(kind=kind, code=code, message="rm -rf /"))
    assert type(err) in set(errdefs.KINDS.values())
    assert type(err) is (errdefs.NotFound if code == 5 else errdefs.Unknown)
    assert err.message == "rm -rf /"
    assert set(sys.modules) == before
    from_json = errdefs.from_json_dict({"kind": kind, "code": code, "message": "x"})
    assert type(from_json) is type(err)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nope",
        "[]",
        '"x"',
        "null",
        "42",
        "{",
        '{"code": "abc"}',
        '{"code": 1e20}',
        '{"code": 1.5}',
        '{"code": true}',
        '{"kind": 5}',
        '{"kind": ["NotFound"]}',
        '{"message": {}}',
        '{"details": []}',
        '{"details": {"a": 1}}',
        '{"details": "x"}',
        b"\xff\xfe{}",
        "[" * 100_000,
        '{"a":' * 100_000,
    ],
    ids=lambda t: repr(t)[:24],
)
def test_invalid_json_raises_invalid_argument(text: str | bytes) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        errdefs.record_from_json(text)


@pytest.mark.parametrize("obj", [[], "x", None, 5, {"code": "abc"}, {1: "x"}])
def test_invalid_json_dict_raises_invalid_argument(obj: object) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        errdefs.from_json_dict(obj)  # type: ignore[arg-type]


def test_null_fields_decode_as_missing() -> None:
    err = errdefs.from_json_dict({"kind": None, "code": None, "message": None, "details": None})
    assert type(err) is errdefs.Unknown
    assert str(err) == "unknown"
