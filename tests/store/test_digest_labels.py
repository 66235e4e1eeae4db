"""Digest parsing and hashing, and containerd's label rules."""

from __future__ import annotations

import hashlib

import pytest

from ingestq import errdefs
from ingestq.store import EMPTY, Digest
from ingestq.store.digest import ALGORITHMS, new_hasher
from ingestq.store.labels import MAX_LABEL_SIZE, MAX_LABELS_TOTAL, apply_update, validate


@pytest.mark.parametrize("alg", sorted(ALGORITHMS))
def test_parse_round_trips_every_algorithm(alg: str) -> None:
    hexd = hashlib.new(alg, b"abc").hexdigest()
    d = Digest.parse(f"{alg}:{hexd}")
    assert (d.algorithm, d.encoded, str(d)) == (alg, hexd, f"{alg}:{hexd}")
    assert Digest.parse(d) is d
    assert d == Digest.from_bytes(b"abc", alg)


def test_empty_digest_is_the_sha256_of_nothing() -> None:
    assert str(EMPTY) == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_digests_are_values() -> None:
    a, b = Digest.from_bytes(b"a"), Digest.from_bytes(b"a")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert sorted([Digest.from_bytes(b"x", "sha512"), a])[0] == a  # ordered by algorithm


def test_hasher_is_incremental() -> None:
    d = Digest.from_bytes(b"hello world", "sha384")
    h = d.hasher()
    h.update(b"hello ")
    h.update(memoryview(b"world"))
    assert h.hexdigest() == d.encoded


def test_unknown_algorithm_hasher_is_invalid() -> None:
    with pytest.raises(errdefs.InvalidArgument):
        new_hasher("md5")
    with pytest.raises(errdefs.InvalidArgument):
        Digest.from_bytes(b"", "sha1")


def test_error_message_names_the_input() -> None:
    with pytest.raises(errdefs.InvalidArgument) as exc:
        Digest.parse("sha256:abc")
    assert str(exc.value) == "'sha256:abc': invalid checksum digest length: invalid argument"


# labels ------------------------------------------------------------------------------
def test_label_limit_counts_utf8_bytes_of_key_plus_value() -> None:
    validate({"k": "v" * (MAX_LABEL_SIZE - 1)})
    validate({"é": "v" * (MAX_LABEL_SIZE - 2)})
    with pytest.raises(errdefs.InvalidArgument) as exc:
        validate({"é": "v" * (MAX_LABEL_SIZE - 1)})
    assert str(exc.value) == (
        "label key and value greater than maximum size (4096 bytes), key: é: invalid argument"
    )
    with pytest.raises(errdefs.InvalidArgument) as exc:
        validate({"0123456789abcdef": "v" * MAX_LABEL_SIZE})
    assert "key: 0123456789: invalid argument" in str(exc.value)  # the first 10 chars


def test_all_labels_of_an_object_together_are_bounded() -> None:
    """One label is at most 4096 bytes (containerd's rule); all of an object's together
    at most MAX_LABELS_TOTAL, however they arrive (a whole set, or one update after
    another: the result is checked)."""
    value = "v" * (MAX_LABEL_SIZE - 8)
    fits = {f"k{i:07d}": value for i in range(MAX_LABELS_TOTAL // MAX_LABEL_SIZE)}
    validate(fits)
    with pytest.raises(errdefs.InvalidArgument, match="maximum size in all"):
        validate({**fits, "one-more": "v"})
    with pytest.raises(errdefs.InvalidArgument, match="maximum size in all"):
        apply_update(fits, {"one-more": "v"}, ("labels.one-more",), "sha256:x")
    # Labels stored before the bound, over it: an update that does not grow them is
    # taken (a removal among them), one that grows them is not.
    over = {**fits, **{f"old{i}": value for i in range(3)}}
    smaller = apply_update(over, {}, ("labels.old0",), "sha256:x")
    assert "old0" not in smaller and len(smaller) == len(over) - 1
    with pytest.raises(errdefs.InvalidArgument, match="maximum size in all"):
        apply_update(smaller, {"old0": value, "new": "v"}, ("labels.old0", "labels.new"), "x")


def test_label_keys_and_values_must_be_strings() -> None:
    with pytest.raises(errdefs.InvalidArgument):
        validate({"k": 1})  # type: ignore[dict-item]
    with pytest.raises(errdefs.InvalidArgument):
        validate({"": "v"})


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        ((), {"a": "10", "z": "9"}),
        (("labels",), {"a": "10", "z": "9"}),
        (("labels.a",), {"a": "10", "b": "2"}),
        (("labels.b",), {"a": "1"}),
        (("labels.z",), {"a": "1", "b": "2", "z": "9"}),
        (("labels.nothere",), {"a": "1", "b": "2"}),
        (("labels.a", "labels.b", "labels.z"), {"a": "10", "z": "9"}),
        (("labels", "labels.b"), {"a": "10", "z": "9"}),
    ],
)
def test_apply_update_fieldpaths(paths: tuple[str, ...], expected: dict[str, str]) -> None:
    current = {"a": "1", "b": "2"}
    new = {"a": "10", "b": "", "z": "9"}
    assert apply_update(current, new, paths, "sha256:x") == expected


def test_apply_update_rejects_other_paths() -> None:
    with pytest.raises(errdefs.InvalidArgument) as exc:
        apply_update({}, {}, ("labels.a", "digest"), "sha256:x")
    assert str(exc.value) == (
        'cannot update "digest" field on content info "sha256:x": invalid argument'
    )


@pytest.mark.parametrize(
    "text",
    [
        "sha256:" + "a" * 63 + "\n",  # the right length with the newline: $ matched it
        "sha256:" + "a" * 64 + "\n",
        "sha256\n:" + "a" * 64,
        "sha256:\n" + "a" * 63,
        "sha25\n:" + "a" * 64,
    ],
)
def test_a_newline_anywhere_makes_a_digest_invalid(text: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        Digest.parse(text)
    alg, _, encoded = text.partition(":")
    with pytest.raises(errdefs.InvalidArgument):
        Digest(alg, encoded)
