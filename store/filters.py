"""containerd's filter expressions, for walk (``digest``, ``labels.*``) and list_statuses (``ref``).

A request carries a list of filter strings, ORed; the empty list and the empty string
match everything. Inside one string, comma-separated selectors are ANDed::

    selectors := selector ("," selector)*
    selector  := fieldpath [operator value]
    fieldpath := field ("." field)*
    field     := quoted | [A-Za-z0-9_]+
    operator  := "==" | "!=" | "~="
    value     := quoted | [^\\s,]+
    quoted    := "..." with Go escapes; after ~= also /.../ and |...|

A selector without an operator tests presence. A field that is absent reads as the empty
string for ``!=`` and ``~=`` (so ``labels.x!=y`` matches content without label ``x``).
``~=`` is an unanchored regular-expression search in RE2's syntax, as containerd's (Go's
regexp): matched by RE2 (google-re2) in time linear in the text, so no pattern can hold a
process up by backtracking (Python's own ``re`` can be made to run for hours, holding the
GIL). Whitespace between tokens is skipped.

Differences from containerd, all more lenient or stricter only where containerd fails
later: a regular expression that does not compile is a parse error here (containerd
logs it and matches nothing), and a value after ``==``/``!=`` may start with ``/`` or
``|``. Parse errors are InvalidArgument reading
``filters: parse error: [<before> >|<char>|< <after>]: <msg>`` as containerd's do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import re2

from ingestq import errdefs
from ingestq.store.values import Info

#: Looks a fieldpath up on an object: the value, or None when the field is absent.
Adaptor = Callable[[Sequence[str]], str | None]

_FIELD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_OPERATOR_CHARS = frozenset("=!~")
_OPERATORS = ("==", "!=", "~=")
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPE_DIGITS = {"x": (16, 2), "u": (16, 4), "U": (16, 8)}


class Pattern(Protocol):
    """A compiled ``~=`` expression."""

    def search(self, text: str) -> object | None:
        """A match object where the expression matches in ``text``, else None."""


def _compile(expression: str) -> Pattern:
    """``expression`` compiled by RE2; ValueError with RE2's reason if it does not."""
    options = re2.Options()
    options.log_errors = False  # RE2 would also print the reason on stderr
    try:
        compiled: Pattern = re2.compile(expression, options)
    except re2.error as e:
        reason = e.args[0] if e.args else e
        raise ValueError(reason.decode() if isinstance(reason, bytes) else str(reason)) from None
    return compiled


@dataclass(frozen=True)
class Selector:
    """One ``fieldpath[op value]`` test; ``operator`` is ``""`` for a presence test."""

    fieldpath: tuple[str, ...]
    operator: str
    value: str = ""
    pattern: Pattern | None = None

    def match(self, adaptor: Adaptor) -> bool:
        """Whether the object behind ``adaptor`` satisfies this selector."""
        got = adaptor(self.fieldpath)
        if self.operator == "":
            return got is not None
        if self.operator == "==":
            return got is not None and got == self.value
        if self.operator == "!=":
            return (got or "") != self.value
        assert self.pattern is not None
        return self.pattern.search(got or "") is not None


@dataclass(frozen=True)
class Filter:
    """A parsed filter list: matches when any of its conjunctions does."""

    alternatives: tuple[tuple[Selector, ...], ...]

    def match(self, adaptor: Adaptor) -> bool:
        """True if any alternative's selectors all match (always true when empty)."""
        if not self.alternatives:
            return True
        return any(all(s.match(adaptor) for s in alt) for alt in self.alternatives)


class _ParseError(Exception):
    def __init__(self, pos: int, msg: str) -> None:
        super().__init__(msg)
        self.pos = pos
        self.msg = msg


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # scanning ----------------------------------------------------------------------
    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        """The next non-space character ('' at the end)."""
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def quoted(self, alt_quotes: bool) -> str:
        start = self.pos
        quote = self.text[start]
        if quote != '"' and not alt_quotes:
            raise _ParseError(start, "invalid quote encountered")
        out: list[str] = []
        i = start + 1
        while True:
            if i >= len(self.text) or self.text[i] == "\n":
                raise _ParseError(start, "quoted literal not terminated")
            c = self.text[i]
            if c == quote:
                self.pos = i + 1
                return "".join(out)
            if c != "\\":
                out.append(c)
                i += 1
                continue
            esc = self.text[i + 1 : i + 2]
            if esc in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[esc])
                i += 2
            elif esc in ("\\", quote):
                out.append(esc)
                i += 2
            elif esc in _ESCAPE_DIGITS or (esc[:1].isdigit() and esc < "8"):
                base, count = _ESCAPE_DIGITS.get(esc, (8, 3))
                first = i + 2 if esc in _ESCAPE_DIGITS else i + 1
                digits = self.text[first : first + count]
                try:
                    if len(digits) != count:
                        raise ValueError(digits)
                    code = int(digits, base)
                    out.append(chr(code))
                except ValueError:
                    raise _ParseError(start, "illegal escape sequence") from None
                i = first + count
            else:
                raise _ParseError(start, "illegal escape sequence")

    def field(self) -> str:
        c = self.peek()
        if c in ('"', "/", "|"):
            return self.quoted(alt_quotes=False)
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _FIELD_CHARS:
            self.pos += 1
        if start == self.pos:
            raise _ParseError(start, "expected field or quoted")
        return self.text[start : self.pos]

    def operator(self) -> str:
        self.skip_ws()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _OPERATOR_CHARS:
            self.pos += 1
        op = self.text[start : self.pos]
        if not op:
            raise _ParseError(start, 'expected an operator ("=="|"!="|"~=")')
        if op not in _OPERATORS:
            raise _ParseError(start, f'unsupported operator "{op}"')
        return op

    def value(self, regex: bool) -> str:
        c = self.peek()
        if c == '"' or (regex and c in ("/", "|")):
            return self.quoted(alt_quotes=regex)
        start = self.pos
        if c in ("", ",", ".") or c in _OPERATOR_CHARS:
            raise _ParseError(start, "expected value or quoted")
        while (
            self.pos < len(self.text)
            and self.text[self.pos] != ","
            and not self.text[self.pos].isspace()
        ):
            self.pos += 1
        return self.text[start : self.pos]

    # grammar -----------------------------------------------------------------------
    def selector(self) -> Selector:
        path = [self.field()]
        while self.peek() == ".":
            self.pos += 1
            path.append(self.field())
        if self.peek() in ("", ","):
            return Selector(tuple(path), "")
        op = self.operator()
        value_pos = self.pos
        value = self.value(regex=op == "~=")
        pattern = None
        if op == "~=":
            try:
                pattern = _compile(value)
            except ValueError as e:
                raise _ParseError(value_pos, f"invalid regular expression {value!r}: {e}") from e
        return Selector(tuple(path), op, value, pattern)

    def parse(self) -> tuple[Selector, ...]:
        selectors = [self.selector()]
        while True:
            c = self.peek()
            if c == "":
                return tuple(selectors)
            if c != ",":
                raise _ParseError(self.pos, f"unexpected input: {c}")
            self.pos += 1
            selectors.append(self.selector())


def _error(text: str, err: _ParseError) -> errdefs.InvalidArgument:
    p = err.pos
    where = f"{text[:p]} >|{text[p]}|< {text[p + 1 :]}" if p < len(text) else text
    return errdefs.InvalidArgument(f"filters: parse error: [{where}]: {err.msg}")


def parse(*filters: str) -> Filter:
    """Parse filter strings (ORed). No strings, or an empty one, matches everything.

    Raises InvalidArgument with containerd's message shape on a syntax error.
    """
    alternatives = []
    always = False
    for text in filters:
        if not isinstance(text, str):
            raise errdefs.InvalidArgument(f"filter must be a string, not {type(text).__name__}")
        if text == "":
            always = True
            continue
        try:
            alternatives.append(_Parser(text).parse())
        except _ParseError as e:
            raise _error(text, e) from None
    return Filter(()) if always else Filter(tuple(alternatives))


def fields(plain: Mapping[str, str], labels: Mapping[str, str] | None = None) -> Adaptor:
    """An Adaptor over ``plain`` fields (a fieldpath looked up with its parts joined by
    ``.``, e.g. ``target.digest``) and, when given, ``labels.<key...>`` (the rest of the
    path joined by ``.`` is the key, so ``labels.a.b`` reads label ``a.b``)."""

    def lookup(fieldpath: Sequence[str]) -> str | None:
        path = tuple(fieldpath)
        if labels is not None and len(path) > 1 and path[0] == "labels":
            return labels.get(".".join(path[1:]))
        return plain.get(".".join(path)) if path else None

    return lookup


def info_fields(info: Info) -> Adaptor:
    """The filter fields of content (walk): ``digest`` and ``labels.<key>``."""
    return fields({"digest": str(info.digest)}, info.labels)


def status_fields(ref: str) -> Adaptor:
    """The filter field of an ingest (list_statuses): ``ref``."""
    return fields({"ref": ref})


__all__ = ["Adaptor", "Filter", "Selector", "fields", "info_fields", "parse", "status_fields"]
