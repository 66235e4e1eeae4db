"""containerd's filter expressions, for walk (``digest``, ``labels.*``) and list_statuses (``ref``).

A request carries a list of filter strings, ORed; the empty list and the empty string match
everything. Inside one string, comma-separated selectors are ANDed. A selector is a
fieldpath, optionally followed by ``==``, ``!=`` or ``~=`` (regular expression, unanchored)
and a value; without an operator it tests presence. ``!=`` also matches an absent field.
Fields are ``[A-Za-z0-9_]+`` or quoted strings joined by ``.``; values are quoted strings or
runs of characters other than comma and whitespace (``/re/`` and ``|re|`` for regexes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import errdefs

#: Looks a fieldpath up on an object: the value, or None when the field is absent.
Adaptor = Callable[[Sequence[str]], str | None]

_FIELD = re.compile(r"[A-Za-z0-9_]+")
_OPERATORS = ("==", "!=", "~=")


@dataclass(frozen=True)
class Selector:
    """One ``field[op value]`` test."""

    fieldpath: tuple[str, ...]
    operator: str  # "" (present), "==", "!=", "~="
    value: str = ""
    pattern: re.Pattern[str] | None = None

    def match(self, adaptor: Adaptor) -> bool:
        """Whether the object behind ``adaptor`` satisfies this selector."""
        got = adaptor(self.fieldpath)
        if self.operator == "":
            return got is not None
        if self.operator == "!=":
            return got != self.value
        if got is None:
            return False
        if self.operator == "==":
            return got == self.value
        assert self.pattern is not None
        return self.pattern.search(got) is not None


@dataclass(frozen=True)
class Filter:
    """A parsed filter list: matches when any of its conjunctions does."""

    alternatives: tuple[tuple[Selector, ...], ...]

    def match(self, adaptor: Adaptor) -> bool:
        """True if any alternative's selectors all match (always true when empty)."""
        if not self.alternatives:
            return True
        return any(all(s.match(adaptor) for s in alt) for alt in self.alternatives)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, msg: str) -> errdefs.InvalidArgument:
        t, p = self.text, self.pos
        where = f"{t[:p]} >|{t[p : p + 1]}|< {t[p + 1 :]}"
        return errdefs.InvalidArgument(f"filters: parse error: [{where}]: {msg}")

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def quoted(self, close: str, allow_escapes: bool) -> str:
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\" and allow_escapes and self.pos + 1 < len(self.text):
                nxt = self.text[self.pos + 1]
                out.append({"n": "\n", "t": "\t", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
                self.pos += 2
                continue
            if c == close:
                self.pos += 1
                return "".join(out)
            out.append(c)
            self.pos += 1
        raise self.fail("unterminated quoted string")

    def field(self) -> str:
        self.skip_ws()
        if self.peek() == '"':
            return self.quoted('"', True)
        m = _FIELD.match(self.text, self.pos)
        if not m:
            raise self.fail("expected field or quoted")
        self.pos = m.end()
        return m.group(0)

    def value(self, regex: bool) -> str:
        self.skip_ws()
        c = self.peek()
        if c == '"':
            return self.quoted('"', True)
        if regex and c in ("/", "|"):
            return self.quoted(c, False)
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ", \t\n\r":
            self.pos += 1
        if start == self.pos:
            raise self.fail("expected value or quoted")
        return self.text[start : self.pos]

    def selector(self) -> Selector:
        path = [self.field()]
        while self.peek() == ".":
            self.pos += 1
            path.append(self.field())
        self.skip_ws()
        op = self.peek(2)
        if op not in _OPERATORS:
            return Selector(tuple(path), "")
        self.pos += 2
        value = self.value(op == "~=")
        pattern = None
        if op == "~=":
            try:
                pattern = re.compile(value)
            except re.error as e:
                raise self.fail(f"invalid regular expression {value!r}: {e}") from None
        return Selector(tuple(path), op, value, pattern)

    def parse(self) -> tuple[Selector, ...]:
        self.skip_ws()
        if self.pos >= len(self.text):
            return ()
        selectors = [self.selector()]
        while True:
            self.skip_ws()
            if self.pos >= len(self.text):
                return tuple(selectors)
            if self.peek() != ",":
                raise self.fail("expected a comma or end of input")
            self.pos += 1
            selectors.append(self.selector())


def parse(*filters: str) -> Filter:
    """Parse filter strings. Raises InvalidArgument with containerd's message shape."""
    alternatives = []
    for text in filters:
        sels = _Parser(text).parse()
        if not sels:
            return Filter(())  # an empty string matches everything
        alternatives.append(sels)
    return Filter(tuple(alternatives))
