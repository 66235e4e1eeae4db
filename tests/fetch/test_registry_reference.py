"""Image and blob references: docker-style normalisation, the fully qualified form, and
the errors of malformed input."""

from __future__ import annotations

import pytest

from ingestq import errdefs
from ingestq.fetch.reference import parse_blob_reference, parse_reference
from ingestq.store.digest import Digest

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ubuntu", "docker.io/library/ubuntu:latest"),
        ("ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
        ("library/ubuntu", "docker.io/library/ubuntu:latest"),
        ("user/app", "docker.io/user/app:latest"),
        ("docker.io/ubuntu", "docker.io/library/ubuntu:latest"),
        ("index.docker.io/library/ubuntu:1", "docker.io/library/ubuntu:1"),
        ("docker://ubuntu", "docker.io/library/ubuntu:latest"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/a/b/c:v1", "localhost:5000/a/b/c:v1"),
        ("127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v1"),
        ("ghcr.io/org/app:v1.2_3-rc", "ghcr.io/org/app:v1.2_3-rc"),
        (f"127.0.0.1:5000/app@{DIGEST}", f"127.0.0.1:5000/app@{DIGEST}"),
        (f"127.0.0.1:5000/app:v1@{DIGEST}", f"127.0.0.1:5000/app:v1@{DIGEST}"),
        ("[::1]:5000/app:v1", "[::1]:5000/app:v1"),
        ("a__b/c-d--e.f", "docker.io/a__b/c-d--e.f:latest"),
    ],
)
def test_references_are_normalised_to_the_fully_qualified_form(text: str, expected: str) -> None:
    assert str(parse_reference(text)) == expected


def test_parts_of_a_reference_and_its_familiar_form() -> None:
    ref = parse_reference(f"registry.example.com:8443/team/app:v2@{DIGEST}")
    assert ref.domain == "registry.example.com:8443"
    assert ref.path == "team/app"
    assert ref.tag == "v2"
    assert ref.digest == Digest.parse(DIGEST)
    assert ref.object == DIGEST  # the digest wins for fetching
    assert ref.name == "registry.example.com:8443/team/app"
    assert ref.hostname == "registry.example.com"
    assert ref.api_host == "registry.example.com:8443"
    assert parse_reference("ubuntu").familiar() == "ubuntu:latest"
    assert parse_reference("ubuntu").api_host == "registry-1.docker.io"
    assert parse_reference("user/app:v1").familiar() == "user/app:v1"


def test_loopback_hosts_are_recognised() -> None:
    assert parse_reference("localhost:5000/a").is_loopback
    assert parse_reference("127.0.0.1:5000/a").is_loopback
    assert parse_reference("127.1.2.3/a").is_loopback
    assert parse_reference("[::1]:5000/a").is_loopback
    assert not parse_reference("registry.example.com/a").is_loopback
    assert not parse_reference("10.0.0.1:5000/a").is_loopback


def test_blob_references_need_a_digest_and_get_no_default_tag() -> None:
    ref = parse_blob_reference(f"127.0.0.1:5000/app@{DIGEST}")
    assert ref.tag is None
    assert ref.digest == Digest.parse(DIGEST)
    with pytest.raises(errdefs.InvalidArgument, match="needs @<digest>"):
        parse_blob_reference("127.0.0.1:5000/app:v1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must not be empty"),
        ("Ubuntu", "must be lowercase"),
        ("app:", "invalid tag"),
        ("app:-bad", "invalid tag"),
        ("app:" + "t" * 129, "invalid tag"),
        ("app@sha256:xyz", "invalid checksum digest"),
        ("app@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("a//b", "invalid repository component"),
        ("app b", "whitespace"),
        ("host:port:5000/a", "invalid registry host"),
        ("a/" + "b" * 260, "not be more than 255"),
        ("127.0.0.1:5000/", "must not be empty"),
    ],
)
def test_malformed_references_are_invalid_argument(text: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=message):
        parse_reference(text)
