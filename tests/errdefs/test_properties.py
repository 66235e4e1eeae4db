"""Property tests: messages and details round-trip exactly across every boundary."""

from __future__ import annotations

import json
import pickle
from typing import Any

import celery
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestq import errdefs

kinds = st.sampled_from(list(errdefs.KINDS.values()))
messages = st.text()
details = st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4)
errors = st.builds(lambda cls, m, d: cls(m, d), kinds, messages, details)
codes = st.integers(min_value=-(2**31), max_value=2**31 - 1).filter(lambda c: c != 0)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
record_like = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from([*errdefs.KINDS, "NotImplemented", "os.system", ""]) | st.text(),
        "code": st.integers(min_value=-5, max_value=40) | json_values,
        "message": st.text() | json_values,
        "details": details | json_values,
    },
)

APP = celery.Celery(
    "errdefs-properties",
    backend="cache+memory://",
    result_serializer="json",
    accept_content=["json"],
)


def same(a: errdefs.ErrdefsError, b: errdefs.ErrdefsError) -> bool:
    return (type(a), str(a), a.details) == (type(b), str(b), b.details)


@given(kinds, messages)
def test_str_is_idempotent_and_ends_with_kind(cls: type[errdefs.ErrdefsError], m: str) -> None:
    text = str(cls(m))
    assert str(cls(text)) == text
    assert text == cls.kind or text.endswith(": " + cls.kind)
    assert text.startswith(m)
    if not m:
        assert text == cls.kind


@given(errors)
def test_grpc_round_trip(err: errdefs.ErrdefsError) -> None:
    back = errdefs.from_grpc(*errdefs.to_grpc(err))
    assert (type(back), str(back)) == (type(err), str(err))


@given(codes, messages)
def test_from_grpc_follows_containerd_rule(code: int, m: str) -> None:
    err = errdefs.from_grpc(code, m)
    cls = errdefs.by_code(code)
    assert type(err) is cls
    if not m:
        assert str(err) == cls.kind
    elif m == cls.kind or m.endswith(": " + cls.kind):
        assert str(err) == m
    else:
        assert str(err) == f"{m}: {cls.kind}"
    assert errdefs.to_grpc(err) == (cls.grpc_code, str(err))


@given(errors)
def test_record_round_trips(err: errdefs.ErrdefsError) -> None:
    rec = errdefs.to_record(err)
    assert same(errdefs.from_record(rec), err)
    assert same(errdefs.from_record(type(rec).FromString(rec.SerializeToString())), err)


@given(errors)
def test_json_round_trips(err: errdefs.ErrdefsError) -> None:
    text = errdefs.record_to_json(errdefs.to_record(err))
    assert same(errdefs.from_record(errdefs.record_from_json(text)), err)
    obj = json.loads(json.dumps(errdefs.to_json_dict(err)))
    assert same(errdefs.from_json_dict(obj), err)


@given(errors)
def test_pickle_round_trips(err: errdefs.ErrdefsError) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert same(back, err) and back.args == err.args


@settings(deadline=None)
@given(errors)
def test_celery_json_round_trips(err: errdefs.ErrdefsError) -> None:
    stored = json.loads(json.dumps(APP.backend.prepare_exception(err)))
    back = APP.backend.exception_to_python(stored)
    assert same(back, err)


@given(errors, st.text())
def test_wrap_keeps_kind_and_prefixes_context(err: errdefs.ErrdefsError, context: str) -> None:
    wrapped = errdefs.wrap(err, context)
    assert type(wrapped) is type(err)
    assert str(wrapped) == (f"{context}: {err}" if context else str(err))
    assert errdefs.resolve(wrapped) is type(err)


@given(st.text(alphabet=st.characters(codec=None, categories=["Cs", "Ll", "Zs"])))
def test_any_python_text_encodes(m: str) -> None:
    rec = errdefs.to_record(errdefs.Internal(m, {m: m}))
    back = errdefs.from_record(errdefs.record_from_json(errdefs.record_to_json(rec)))
    assert type(back) is errdefs.Internal
    assert str(back) == rec.message


@given(json_values | record_like)
def test_decoding_any_json_gives_a_registry_kind_or_invalid_argument(obj: Any) -> None:
    def via_text() -> errdefs.ErrdefsError:
        return errdefs.from_record(errdefs.record_from_json(json.dumps(obj)))

    def via_dict() -> errdefs.ErrdefsError:
        return errdefs.from_json_dict(obj)

    for decode in (via_text, via_dict):
        try:
            err = decode()
        except errdefs.InvalidArgument:
            continue
        assert type(err) in set(errdefs.KINDS.values())
