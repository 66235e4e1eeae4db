"""The gRPC boundary as plain numbers: (status code, message) to and from errdefs errors.

No ``grpc`` import: the server/client glue passes ``code.value[0]`` of a
``grpc.StatusCode`` in and builds a status from the pair that comes out.

The rules are containerd's (``errdefs.ToGRPC`` / ``FromGRPC``, extended to all 16
codes as in ``github.com/containerd/errdefs``):

* ``to_grpc``: the code of ``resolve(err)`` and the **full** ``str(err)``, including
  the ``": <kind text>"`` suffix; an error of no kind is Unknown (2).
* ``from_grpc``: the class from the code (unmapped codes are Unknown); a message
  equal to the kind text gives a bare error, a message ending with ``": <kind
  text>"`` is kept as it is (so ``str()`` round-trips exactly), and any other message
  gets the suffix appended, as containerd 1.6 does: ``"blob missing"`` with NOT_FOUND
  becomes ``"blob missing: not found"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from ingestq.errdefs._classify import resolve, safe_str
from ingestq.errdefs._kinds import KINDS, ErrdefsError, Unknown

#: gRPC code 0: success, never an error.
OK: Final = 0

_BY_CODE: Final[Mapping[int, type[ErrdefsError]]] = MappingProxyType(
    {kind.grpc_code: kind for kind in KINDS.values()}
)


def by_code(code: int) -> type[ErrdefsError]:
    """The kind whose gRPC status code is ``code``; Unknown for unmapped codes
    (including 0, OK)."""
    return _BY_CODE.get(code, Unknown)


def to_grpc(err: BaseException) -> tuple[int, str]:
    """``(resolve(err).grpc_code, str(err))``: the status code and the full message to
    send for ``err``. An error of no kind gives ``(2, str(err))``."""
    return resolve(err).grpc_code, safe_str(err)


def from_grpc(code: int, message: str) -> ErrdefsError:
    """The errdefs error for a failed gRPC status; ``str()`` of the result equals
    ``message`` whenever ``message`` came from ``to_grpc``.

    Raises:
        ValueError: ``code`` is 0 (OK), which is not an error.
        TypeError: ``code`` is not an int (pass ``status_code.value[0]`` for a
            ``grpc.StatusCode``).
    """
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(f"gRPC status code must be an int, got {type(code).__name__}")
    if code == OK:
        raise ValueError("gRPC status code 0 (OK) is not an error")
    kind = by_code(code)
    return kind("" if message == kind.kind else message)
