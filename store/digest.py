"""Content digests: ``<algorithm>:<lowercase hex>`` for sha256, sha384 and sha512.

Parsing follows go-digest's rules (and messages), so errors read the same as containerd's.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from ingestq import errdefs

#: Hex length of each supported algorithm's digest.
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}
CANONICAL = "sha256"

# Used with fullmatch only: ``$`` would also match before a trailing newline.
_GRAMMAR = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_LOWER_HEX = re.compile(r"[a-f0-9]+")


class Hasher(Protocol):
    """What :func:`Digest.hasher` returns: an incremental hash (hashlib's shape)."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        """Hash ``data`` after what came before."""
        ...

    def hexdigest(self) -> str:
        """The hex digest of everything so far."""
        ...

    def copy(self) -> Hasher:
        """An independent hasher in the same state."""
        ...


@dataclass(frozen=True, order=True)
class Digest:
    """A validated content digest. ``str(d)`` is the canonical ``alg:hex`` form."""

    algorithm: str
    encoded: str

    def __post_init__(self) -> None:
        length = ALGORITHMS.get(self.algorithm)
        if length is None:
            raise errdefs.InvalidArgument(f"{self}: unsupported digest algorithm")
        if len(self.encoded) != length:
            raise errdefs.InvalidArgument(f"{self}: invalid checksum digest length")
        if not _LOWER_HEX.fullmatch(self.encoded):
            raise errdefs.InvalidArgument(f"{self}: invalid checksum digest format")

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"

    @classmethod
    def parse(cls, text: str | Digest) -> Digest:
        """Parse ``alg:hex``. Raises InvalidArgument naming the input and what is wrong."""
        if isinstance(text, Digest):
            return text
        if not isinstance(text, str):
            raise errdefs.InvalidArgument(f"digest must be a string, not {type(text).__name__}")
        alg, sep, encoded = text.partition(":")
        if not sep or not encoded:
            raise errdefs.InvalidArgument(f"{text!r}: invalid checksum digest format")
        if alg not in ALGORITHMS:
            if _GRAMMAR.fullmatch(text):
                raise errdefs.InvalidArgument(f"{text!r}: unsupported digest algorithm")
            raise errdefs.InvalidArgument(f"{text!r}: invalid checksum digest format")
        if len(encoded) != ALGORITHMS[alg]:
            raise errdefs.InvalidArgument(f"{text!r}: invalid checksum digest length")
        if not _LOWER_HEX.fullmatch(encoded):
            raise errdefs.InvalidArgument(f"{text!r}: invalid checksum digest format")
        return cls(alg, encoded)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, algorithm: str = CANONICAL) -> Digest:
        """The digest of ``data`` (sha256 unless ``algorithm`` says otherwise)."""
        h = new_hasher(algorithm)
        h.update(data)
        return cls(algorithm, h.hexdigest())

    def hasher(self) -> Hasher:
        """A fresh incremental hasher of this digest's algorithm."""
        return new_hasher(self.algorithm)


def new_hasher(algorithm: str = CANONICAL) -> Hasher:
    """A fresh hashlib object for ``algorithm``. Raises InvalidArgument if unsupported."""
    if algorithm not in ALGORITHMS:
        raise errdefs.InvalidArgument(f"{algorithm!r}: unsupported digest algorithm")
    h: Hasher = hashlib.new(algorithm)
    return h


#: The sha256 of the empty content, what a fresh writer reports.
EMPTY = Digest.from_bytes(b"")
