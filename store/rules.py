"""containerd's rules that every store implementation applies, with containerd's messages.

Request fields (:func:`validate_ref`, :func:`validate_labels`, :func:`validate_size`,
:func:`validate_media_type`; digests validate themselves in
:class:`ingestq.store.digest.Digest`), commit checks (size first, then digest), the
resume check on the total, and the bounds of a ranged read. The local, in-memory and any
other store call these, so they fail the same way with the same words; so do the places
where a request is made or received (the producer API, the Celery tasks, the gRPC
server), so that a bad field fails there, before anything is fetched.
Refs (:func:`validate_ref`), the total a writer opens with, commit checks (size first,
then digest), the resume check on the total, and the bounds of a ranged read. The
local, in-memory and any other store call these, so they fail the same way with the
same words.
"""

from __future__ import annotations

import re

from ingestq import errdefs
from ingestq.store.digest import Digest
from ingestq.store.labels import validate as validate_labels
from ingestq.store.values import Descriptor

#: The longest ref, in UTF-8 bytes.
MAX_REF_BYTES = 4096

#: The largest size a descriptor can state (containerd's and the gRPC API's int64).
MAX_SIZE = (1 << 63) - 1

# RFC 6838 section 4.2 type/subtype names, as the OCI image spec's schema states them;
# used with fullmatch only (``$`` would accept a trailing newline).
_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)

# The characters a ref may not hold: C0 controls (NUL included) and DEL.
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def validate_size(size: object) -> None:
    """Raise InvalidArgument unless ``size`` is an int (not a bool) in [0, 2**63 - 1]
    (0 meaning unknown)."""
    if not isinstance(size, int) or isinstance(size, bool):
        raise errdefs.InvalidArgument(f"size {size!r} is not an integer")
    if size < 0:
        raise errdefs.InvalidArgument(f"size {size} is negative")
    if size > MAX_SIZE:
        raise errdefs.InvalidArgument(
            f"size {size} is larger than the store can hold (at most {MAX_SIZE})"
        )


def validate_media_type(media_type: object) -> None:
    """Raise InvalidArgument unless ``media_type`` is an RFC 6838 ``type/subtype`` (each
    name 1 to 127 characters, no parameters), as OCI descriptors require."""
    if not isinstance(media_type, str) or not _MEDIA_TYPE.fullmatch(media_type):
        raise errdefs.InvalidArgument(f"media type {str(media_type)[:80]!r} is not type/subtype")


def validate_ref(ref: str) -> None:
    """Raise InvalidArgument for an empty ref, one over 4096 UTF-8 bytes, one that is not
    valid UTF-8, or one holding NUL or other control characters. Any other string is a
    valid ref: refs only ever name files through their sha256, so none can escape."""
    if not isinstance(ref, str) or not ref:
        raise errdefs.InvalidArgument("ref must not be empty")
    try:
        size = len(ref.encode("utf-8"))
    except UnicodeEncodeError:
        raise errdefs.InvalidArgument(f"ref {ref[:32]!r} is not valid UTF-8") from None
    if size > MAX_REF_BYTES:
        raise errdefs.InvalidArgument(
            f"ref {ref[:32]!r}... is {size} bytes, longer than {MAX_REF_BYTES}"
        )
    if _CONTROL.search(ref) is not None:
        raise errdefs.InvalidArgument(f"ref {ref[:64]!r} contains control characters")


def writer_total(ref: str, expected: Descriptor | None, total: int) -> int:
    """The known total (0: unknown) of a writer opened on ``ref`` with ``expected`` and
    ``total``: ``expected.size``, or ``total`` when there is no expected size (containerd's
    descriptor with a size and no digest). InvalidArgument for a negative ``total``, or
    one that differs from ``expected.size``."""
    size = expected.size if expected is not None else 0
    if total < 0:
        raise errdefs.InvalidArgument(f"ref {ref}: negative total {total}")
    if size > 0 and total > 0 and size != total:
        raise errdefs.InvalidArgument(
            f"ref {ref}: total {total} differs from the expected size {size}"
        )
    return size if size > 0 else total


def check_resume_total(ref: str, total: int, stored_total: int) -> None:
    """FailedPrecondition when a writer's known ``total`` differs from the known total
    the unfinished ingest of ``ref`` started with (``provided total differs ...``)."""
    if total > 0 and stored_total > 0 and total != stored_total:
        raise errdefs.FailedPrecondition(
            f"provided total differs from status: {total} != {stored_total}"
            f" (abort ref {ref} to start over)"
        )


def check_commit_size(ref: str, written: int, size: int) -> None:
    """A commit's first check, when ``size > 0``: FailedPrecondition ``"<ref>" failed
    size validation: <written> != <size>``."""
    if size > 0 and size != written:
        raise errdefs.FailedPrecondition(f'"{ref}" failed size validation: {written} != {size}')


def check_commit_digest(actual: Digest, expected: Digest | None) -> None:
    """A commit's second check, when ``expected`` is given: FailedPrecondition
    ``unexpected commit digest <actual>, expected <expected>``."""
    if expected is not None and actual != expected:
        raise errdefs.FailedPrecondition(f"unexpected commit digest {actual}, expected {expected}")


def check_read(offset: int, length: int, size: int) -> int:
    """How many bytes a read of ``length`` at ``offset`` returns from ``size`` bytes
    (fewer only at the end, 0 at the end). OutOfRange for an offset below 0 or past the
    end, InvalidArgument for a negative length."""
    if offset < 0 or offset > size:
        raise errdefs.OutOfRange(f"read past object length {size} bytes")
    if length < 0:
        raise errdefs.InvalidArgument(f"negative read length {length}")
    return min(length, size - offset)


__all__ = [
    "MAX_REF_BYTES",
    "MAX_SIZE",
    "check_commit_digest",
    "check_commit_size",
    "check_read",
    "check_resume_total",
    "validate_labels",
    "validate_media_type",
    "validate_ref",
    "validate_size",
    "writer_total",
]
