"""containerd's filter syntax: parsing (quoting, regexes, operators, presence, AND/OR),
matching semantics, and the parse-error message shape."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from ingestq import errdefs
from ingestq.store.filters import Adaptor, parse


def obj(**fields: str) -> Adaptor:
    """An adaptor over a flat mapping; ``labels`` keys are given as ``labels__<key>``."""
    labels = {k[len("labels__") :]: v for k, v in fields.items() if k.startswith("labels__")}
    plain = {k: v for k, v in fields.items() if not k.startswith("labels__")}

    def lookup(path: Sequence[str]) -> str | None:
        if path and path[0] == "labels" and len(path) > 1:
            return labels.get(".".join(path[1:]))
        return plain.get(".".join(path))

    return lookup


def matches(filters: Sequence[str], target: Adaptor) -> bool:
    return parse(*filters).match(target)


LAYER = obj(ref="layer-sha256:abc", labels__kind="layer", **{"labels__a.b": "dotted"})
CONFIG = obj(ref="config-sha256:def", labels__kind="config")
BARE = obj(ref="index-1")


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([], (True, True, True)),
        ([""], (True, True, True)),
        (["ref==index-1"], (False, False, True)),
        (["ref!=index-1"], (True, True, False)),
        (["labels.kind"], (True, True, False)),
        (["labels.kind==layer"], (True, False, False)),
        (["labels.kind!=layer"], (False, True, True)),  # absent counts as different
        (['labels.kind!=""'], (True, True, False)),  # ...but absent reads as ""
        (["labels.kind~=^$"], (False, False, True)),
        (["ref~=sha256"], (True, True, False)),  # unanchored search
        (["ref~=^sha256"], (False, False, False)),
        (["ref~=/^(layer|index)/"], (True, False, True)),
        (["ref~=|c$|"], (True, False, False)),
        (['ref~="f$"'], (False, True, False)),
        (["labels.kind==layer,ref~=abc"], (True, False, False)),  # AND
        (["labels.kind==layer,ref~=def"], (False, False, False)),
        (["labels.kind==layer", "ref==index-1"], (True, False, True)),  # OR
        (["ref==nothing", ""], (True, True, True)),
        (['labels."a.b"==dotted'], (True, False, False)),  # quoted field with a dot
        (["labels.a.b==dotted"], (True, False, False)),  # or the rest of the path joined
        (['"ref"=="index-1"'], (False, False, True)),
        (["  ref  ==  index-1  ,  labels.kind  "], (False, False, False)),
        (["  ref  ==  index-1  "], (False, False, True)),
        (["missing"], (False, False, False)),
        (["missing!=x"], (True, True, True)),
    ],
)
def test_matching(filters: list[str], expected: tuple[bool, bool, bool]) -> None:
    assert tuple(matches(filters, t) for t in (LAYER, CONFIG, BARE)) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (r'"a\"b"', 'a"b'),
        (r'"tab\there"', "tab\there"),
        (r'"\x41\u00e9\U0001F600\101"', "Aé😀A"),
        (r'"back\\slash"', "back\\slash"),
        ('"comma, space"', "comma, space"),
    ],
)
def test_quoted_values_use_go_escapes(value: str, text: str) -> None:
    flt = parse(f"labels.x=={value}")
    assert flt.alternatives[0][0].value == text


def test_regex_alternative_quotes_allow_their_delimiter_escaped() -> None:
    flt = parse(r"ref~=/a\/b/")
    assert flt.alternatives[0][0].value == "a/b"
    assert flt.match(obj(ref="xa/by"))


def test_value_may_contain_operators_and_dots() -> None:
    flt = parse("labels.url==http://host:5000/a.b?c=d")
    assert flt.alternatives[0][0].value == "http://host:5000/a.b?c=d"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a b", '[a  >|b|< ]: expected an operator ("=="|"!="|"~=")'),
        ("a==", "[a==]: expected value or quoted"),
        ("a,", "[a,]: expected field or quoted"),
        (",a", "[ >|,|< a]: expected field or quoted"),
        ("a=b", '[a >|=|< b]: unsupported operator "="'),
        ("a=~b", '[a >|=|< ~b]: unsupported operator "=~"'),
        ('"abc', '[ >|"|< abc]: quoted literal not terminated'),
        (r'a=="\d"', r'[a== >|"|< \d"]: illegal escape sequence'),
        ("a==/x/", None),  # a plain value after == (containerd would refuse the quote)
        ("/a/==x", "[ >|/|< a/==x]: invalid quote encountered"),
        ("a~=/(/", "invalid regular expression '('"),
        ("a==b c", "[a==b  >|c|< ]: unexpected input: c"),
        ("a..b", "[a. >|.|< b]: expected field or quoted"),
        (" ", "[ ]: expected field or quoted"),
        ("\x00", "[ >|\x00|< ]: expected field or quoted"),
    ],
)
def test_parse_errors_have_containerds_shape(text: str, message: str | None) -> None:
    if message is None:
        parse(text)
        return
    with pytest.raises(errdefs.InvalidArgument) as exc:
        parse(text)
    got = str(exc.value)
    assert got.startswith("filters: parse error: ")
    assert got.endswith(": invalid argument")
    assert message in got


def test_a_bad_filter_after_an_empty_one_still_fails() -> None:
    with pytest.raises(errdefs.InvalidArgument):
        parse("", "a==")


def test_non_string_filters_are_invalid() -> None:
    with pytest.raises(errdefs.InvalidArgument):
        parse(3)  # type: ignore[arg-type]


def test_a_backtracking_pattern_is_matched_in_linear_time() -> None:
    """Python's ``re`` takes about 4x longer per character on this pattern (hours at a
    few dozen characters, holding the GIL, so one request froze a whole server); RE2
    answers at once however long the text (the suite's timeout would end a hang)."""
    pattern = parse("ref~=/((.|.)|(.|.))*!/")
    assert not pattern.match(obj(ref="a" * 100_000))
    assert pattern.match(obj(ref="a" * 100_000 + "!"))


@pytest.mark.parametrize("expression", ["(?=a)", "(?<=a)b", "(?!a)"])
def test_go_regexp_syntax_only(expression: str) -> None:
    """RE2's syntax is Go's (containerd's): no lookaround."""
    with pytest.raises(errdefs.InvalidArgument, match="invalid regular expression"):
        parse(f"ref~=|{expression}|")
