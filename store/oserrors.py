"""Map operating-system errors onto errdefs kinds, keeping the OS message."""

from __future__ import annotations

import errno

from ingestq import errdefs

_KINDS: dict[int, type[errdefs.ErrdefsError]] = {
    errno.ENOSPC: errdefs.ResourceExhausted,
    errno.EDQUOT: errdefs.ResourceExhausted,
    errno.EFBIG: errdefs.ResourceExhausted,
    errno.EMFILE: errdefs.ResourceExhausted,
    errno.ENFILE: errdefs.ResourceExhausted,
    errno.EACCES: errdefs.PermissionDenied,
    errno.EPERM: errdefs.PermissionDenied,
    errno.EROFS: errdefs.PermissionDenied,
    errno.ENOENT: errdefs.NotFound,
    errno.EIO: errdefs.DataLoss,
    errno.EAGAIN: errdefs.Unavailable,  # and EWOULDBLOCK: held or busy, try again
}


def from_os_error(err: OSError, context: str) -> errdefs.ErrdefsError:
    """An errdefs error of the kind matching ``err.errno`` (Unknown otherwise), reading
    ``<context>: <strerror>``, with ``err`` as its cause."""
    kind = _KINDS.get(err.errno or 0, errdefs.Unknown)
    reason = err.strerror or str(err)
    out = kind(f"{context}: {reason}")
    out.__cause__ = err
    return out
