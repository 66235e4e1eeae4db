"""Input patterns match the whole input: a trailing newline (which ``$`` accepts) or a
non-ASCII digit or letter makes a reference or platform invalid."""

from __future__ import annotations

import pytest

from ingestq import errdefs
from ingestq.fetch import platforms
from ingestq.fetch.reference import parse_reference

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "text",
    [
        "busybox:latest\n",
        "busybox\n:latest",
        "registry.example\n/app:v1",
        "registry.example/app\n/x:v1",
        "busybox:lat\u00e9st",  # \w without re.ASCII would take it
        "busybox@" + DIGEST[:-1] + "\n",
    ],
)
def test_references_with_a_newline_or_non_ascii_are_invalid(text: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        parse_reference(text)


def test_valid_references_still_parse() -> None:
    assert parse_reference("busybox:latest").tag == "latest"
    assert parse_reference("127.0.0.1:5000/app@" + DIGEST).digest is not None


@pytest.mark.parametrize("text", ["linux/amd64\n", "linux\n/amd64", "linux/arm64/v8\n"])
def test_platforms_with_a_newline_are_invalid(text: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        platforms.parse(text)
