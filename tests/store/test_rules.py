"""containerd's rules with containerd's messages (store.rules), shared by every store, and
the rules every request field is checked against when a request is made."""

from __future__ import annotations

import pytest

from ingestq import errdefs
from ingestq.store import Digest
from ingestq.store.rules import (
    MAX_REF_BYTES,
    MAX_SIZE,
    check_commit_digest,
    check_commit_size,
    check_read,
    check_resume_total,
    validate_labels,
    validate_media_type,
    validate_ref,
    validate_size,
)


@pytest.mark.parametrize(
    "ref", ["", "x" * (MAX_REF_BYTES + 1), "a\x00b", "tab\t", "\x7f", "\udcff"]
)
def test_invalid_refs(ref: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        validate_ref(ref)


@pytest.mark.parametrize("ref", ["layer-sha256:abc", "../../etc", "é" * 100, "x" * MAX_REF_BYTES])
def test_valid_refs(ref: str) -> None:
    validate_ref(ref)


def test_commit_checks_read_as_containerd_s() -> None:
    check_commit_size("r", 5, 0)  # unknown size
    check_commit_size("r", 5, 5)
    with pytest.raises(errdefs.FailedPrecondition, match='"r" failed size validation: 5 != 6'):
        check_commit_size("r", 5, 6)
    a, b = Digest.from_bytes(b"a"), Digest.from_bytes(b"b")
    check_commit_digest(a, None)
    check_commit_digest(a, a)
    with pytest.raises(
        errdefs.FailedPrecondition, match=f"unexpected commit digest {a}, expected {b}"
    ):
        check_commit_digest(a, b)


def test_resume_total() -> None:
    for total, stored in ((0, 5), (5, 0), (5, 5)):
        check_resume_total("r", total, stored)
    with pytest.raises(
        errdefs.FailedPrecondition, match="provided total differs from status: 6 != 5"
    ):
        check_resume_total("r", 6, 5)


def test_read_bounds() -> None:
    assert check_read(0, 10, 4) == 4
    assert check_read(4, 10, 4) == 0
    assert check_read(1, 2, 4) == 2
    for offset in (-1, 5):
        with pytest.raises(errdefs.OutOfRange, match="read past object length 4 bytes"):
            check_read(offset, 1, 4)
    with pytest.raises(errdefs.InvalidArgument):
        check_read(0, -1, 4)


# request fields ------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, MAX_SIZE])
def test_valid_sizes(size: int) -> None:
    validate_size(size)


@pytest.mark.parametrize("size", [-1, MAX_SIZE + 1, True, "1", 1.0, None])
def test_invalid_sizes(size: object) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        validate_size(size)


@pytest.mark.parametrize(
    "media_type",
    [
        "application/octet-stream",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "a/" + "b" * 127,
    ],
)
def test_valid_media_types(media_type: str) -> None:
    validate_media_type(media_type)


@pytest.mark.parametrize(
    "media_type",
    [
        "",
        "application/json\n",  # $ would match before the newline
        "\napplication/json",
        "application",
        "application/",
        "text/plain; charset=utf-8",
        "a/" + "b" * 128,
        "a b/c",
        None,
        3,
    ],
)
def test_invalid_media_types(media_type: object) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        validate_media_type(media_type)


def test_refs_and_label_keys_with_a_trailing_newline_are_invalid() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="control characters"):
        validate_ref("layer-sha256:abc\n")
    with pytest.raises(errdefs.InvalidArgument, match="control characters"):
        validate_labels({"team\n": "a"})
    validate_labels({"org.opencontainers.image.description": "two\nlines\n"})  # values may


@pytest.mark.parametrize("labels", [["a", "b"], "a=b", {"k": 1}, {1: "v"}, {"\udcff": "v"}])
def test_malformed_labels_are_invalid(labels: object) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        validate_labels(labels)  # type: ignore[arg-type]
