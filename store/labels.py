"""Label rules (containerd's ``labels.Validate``) and fieldpath updates shared by stores."""

from __future__ import annotations

from collections.abc import Mapping

from ingestq import errdefs

MAX_LABEL_SIZE = 4096

#: The most bytes (keys and values, UTF-8) all labels of one object may take: beyond
#: containerd, which has no bound and whose 16 MiB gRPC messages an object's labels
#: could then outgrow (an OCI index of thousands of manifests needs about 80 bytes of
#: gc.ref label per manifest).
MAX_LABELS_TOTAL = 256 << 10


def _control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def validate(labels: Mapping[str, str], *, allowed_total: int = MAX_LABELS_TOTAL) -> None:
    """Raise InvalidArgument unless ``labels`` maps strings to strings with containerd's
    rule: ``len(key) + len(value)`` at most 4096 UTF-8 bytes. Beyond containerd, a key
    must be non-empty valid UTF-8 without control characters (a trailing newline
    included); values may hold any valid UTF-8 (annotations copied into labels can span
    lines). All of them together at most :data:`MAX_LABELS_TOTAL` bytes, or
    ``allowed_total`` when more (labels stored before that bound may shrink)."""
    if not isinstance(labels, Mapping):
        raise errdefs.InvalidArgument(f"labels must be an object, not {type(labels).__name__}")
    total = 0
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise errdefs.InvalidArgument("label keys and values must be strings")
        if not key:
            raise errdefs.InvalidArgument("label key must not be empty")
        try:
            size = len(key.encode()) + len(value.encode())
        except UnicodeEncodeError:
            raise errdefs.InvalidArgument(f"label {key[:10]!r} is not valid UTF-8") from None
        if _control(key):
            raise errdefs.InvalidArgument(f"label key {key[:64]!r} contains control characters")
        if size > MAX_LABEL_SIZE:
            raise errdefs.InvalidArgument(
                f"label key and value greater than maximum size ({MAX_LABEL_SIZE} bytes), "
                f"key: {key[:10]}"
            )
        total += size
        if total > max(MAX_LABELS_TOTAL, allowed_total):
            raise errdefs.InvalidArgument(
                f"labels greater than maximum size in all ({MAX_LABELS_TOTAL} bytes)"
            )


def apply_update(
    current: Mapping[str, str], new: Mapping[str, str], fieldpaths: tuple[str, ...], what: str
) -> dict[str, str]:
    """The labels after an update with ``fieldpaths`` (``labels``, ``labels.<key>``; none
    replaces all). Empty values delete. InvalidArgument for other paths or bad labels."""
    if not fieldpaths:
        result = dict(new)
    else:
        result = dict(current)
        for path in fieldpaths:
            if path == "labels":
                result = dict(new)
            elif path.startswith("labels."):
                key = path[len("labels.") :]
                if new.get(key):
                    result[key] = new[key]
                else:
                    result.pop(key, None)
            else:
                raise errdefs.InvalidArgument(
                    f'cannot update "{path}" field on content info "{what}"'
                )
    result = {k: v for k, v in result.items() if v != ""}
    validate(result, allowed_total=_total(current))
    return result


def _total(labels: Mapping[str, str]) -> int:
    """The bytes ``labels`` take by :func:`validate`'s count (0 for what it would
    refuse anyway)."""
    try:
        return sum(len(k.encode()) + len(v.encode()) for k, v in labels.items())
    except (AttributeError, UnicodeEncodeError):
        return 0
