"""Incremental hashes whose state can be saved and restored: :class:`StateHasher`.

A multipart upload's parts cannot be read back before the upload completes, so a writer
that adopts an unfinished upload cannot re-hash its prefix. Instead each writer stores
the hash state reached at the last uploaded part (with each part's size and MD5, which
the server's ListParts ETags confirm), and the next writer restores it. hashlib states
are opaque, so this uses OpenSSL's ``SHA*_Init/Update/Final`` through ctypes (the same
libcrypto hashlib itself links): the state is the plain ``SHA256_CTX``/``SHA512_CTX``
struct, whose layout OpenSSL has kept since 0.9.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
from dataclasses import dataclass
from typing import Any, Self

from ingestq import errdefs


@dataclass(frozen=True)
class _Alg:
    init: str
    update: str
    final: str
    ctx_size: int
    out_size: int


_ALGS = {
    "sha256": _Alg("SHA256_Init", "SHA256_Update", "SHA256_Final", 112, 32),
    "sha384": _Alg("SHA384_Init", "SHA384_Update", "SHA384_Final", 216, 48),
    "sha512": _Alg("SHA512_Init", "SHA512_Update", "SHA512_Final", 216, 64),
}


@functools.cache
def _libcrypto() -> Any:
    name = ctypes.util.find_library("crypto")
    if name is None:
        raise errdefs.FailedPrecondition("libcrypto (OpenSSL) not found: resumable hashes need it")
    lib = ctypes.CDLL(name)
    for alg in _ALGS.values():
        for fn in (alg.init, alg.update, alg.final):
            getattr(lib, fn).restype = ctypes.c_int
        getattr(lib, alg.update).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return lib


def _known(algorithm: str) -> _Alg:
    alg = _ALGS.get(algorithm)
    if alg is None:
        raise errdefs.InvalidArgument(f"{algorithm!r}: unsupported digest algorithm")
    return alg


class StateHasher:
    """A sha256/sha384/sha512 hash with :meth:`state` and :meth:`restore` (hashlib's
    ``update``/``hexdigest``/``copy`` shape otherwise). InvalidArgument for another
    algorithm, FailedPrecondition when libcrypto cannot be loaded."""

    def __init__(self, algorithm: str, state: bytes | None = None) -> None:
        self.algorithm = algorithm
        self._alg = _known(algorithm)
        self._lib = _libcrypto()
        if state is None:
            self._ctx = ctypes.create_string_buffer(self._alg.ctx_size)
            getattr(self._lib, self._alg.init)(self._ctx)
        else:
            if len(state) != self._alg.ctx_size:
                raise errdefs.InvalidArgument(f"{algorithm} hash state of {len(state)} bytes")
            self._ctx = ctypes.create_string_buffer(bytes(state), self._alg.ctx_size)

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        """Hash ``data`` after what came before."""
        view = memoryview(data).cast("B")
        if not view.nbytes:
            return
        if view.readonly:
            buf = ctypes.c_char_p(view.tobytes() if not isinstance(data, bytes) else data)
            getattr(self._lib, self._alg.update)(self._ctx, buf, view.nbytes)
        else:
            arr = (ctypes.c_char * view.nbytes).from_buffer(view)
            getattr(self._lib, self._alg.update)(self._ctx, arr, view.nbytes)

    def copy(self) -> StateHasher:
        """An independent hasher in the same state."""
        return StateHasher(self.algorithm, self.state())

    def state(self) -> bytes:
        """The hash state, for :meth:`restore`."""
        return self._ctx.raw

    @classmethod
    def restore(cls, algorithm: str, state: bytes) -> Self:
        """A hasher continuing from ``state`` (InvalidArgument if it has the wrong size)."""
        return cls(algorithm, state)

    def hexdigest(self) -> str:
        """The hex digest of everything so far (the hasher stays usable)."""
        ctx = ctypes.create_string_buffer(self._ctx.raw, self._alg.ctx_size)
        out = ctypes.create_string_buffer(self._alg.out_size)
        getattr(self._lib, self._alg.final)(out, ctx)
        return out.raw.hex()


def md5_hex(data: bytes | bytearray | memoryview) -> str:
    """The hex MD5 of ``data``: what S3 reports as a part's ETag."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


__all__ = ["StateHasher", "md5_hex"]
