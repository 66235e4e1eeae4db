"""Bounded decoding of ``Content-Encoding``: gzip and deflate, at most a piece at a time.

httpx decodes each chunk it receives whole, so a few kilobytes of a compression bomb
(``Content-Encoding: gzip, gzip``: the expansion squared) become gigabytes in memory at
once. :func:`decoded` yields at most ``piece`` bytes per step whatever the input, so a
reader that stops at its limit holds no more than that.

Only one encoding is decoded: ``gzip`` (``x-gzip``; concatenated members too) or
``deflate`` (zlib-wrapped, or raw as some servers send it). Every request asks for
``identity``; a server that applies anything else, or two encodings, is Unimplemented.
A body that is not what its encoding says, or ends before its end, is DataLoss.

Imports errdefs only.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from ingestq import errdefs

#: The encodings :func:`decoded` takes, and zlib's ``wbits`` for each.
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def encoding_of(header: str) -> str | None:
    """The one encoding ``header`` (a ``Content-Encoding`` value) names, lower case; None
    for none or ``identity``. Unimplemented for several, or one not decoded here."""
    names = [n.strip().lower() for n in header.split(",") if n.strip()]
    names = [n for n in names if n != "identity"]
    if not names:
        return None
    if len(names) > 1 or names[0] not in _WBITS:
        raise errdefs.Unimplemented(
            f"Content-Encoding {header!r}: only one of gzip or deflate is decoded "
            f"(identity was asked for)"
        )
    return names[0]


def decoded(chunks: Iterable[bytes], encoding: str, piece: int, what: str) -> Iterator[bytes]:
    """The bytes of ``chunks`` (a body encoded with ``encoding``, from
    :func:`encoding_of`), decoded, at most ``piece`` bytes per item. DataLoss for a body
    its encoding cannot decode, or that ends before the encoded stream does."""
    wbits = _WBITS[encoding]
    inflater = zlib.decompressobj(wbits)
    started = False  # output seen, or input accepted (deflate may be raw instead)
    ended = False
    try:
        for chunk in chunks:
            data = chunk
            while data:
                if ended:
                    if encoding == "deflate" or not data.lstrip(b"\0"):
                        data = b""  # trailing bytes after the stream
                        break
                    inflater = zlib.decompressobj(wbits)  # another gzip member
                    ended = False
                try:
                    out = inflater.decompress(data, piece)
                except zlib.error:
                    if encoding == "deflate" and not started:
                        wbits = -zlib.MAX_WBITS  # raw deflate, without zlib's header
                        inflater = zlib.decompressobj(wbits)
                        started = True
                        continue
                    raise
                started = True
                data = inflater.unconsumed_tail
                if inflater.eof:
                    data = inflater.unused_data
                    ended = True
                if out:
                    yield out
                # A full piece may leave output inside zlib with no input left.
                while not data and not inflater.eof and len(out) == piece:
                    out = inflater.decompress(b"", piece)
                    if out:
                        yield out
    except zlib.error as e:
        raise errdefs.DataLoss(f"{what}: body is not valid {encoding}: {e}") from None
    if started and not ended:
        raise errdefs.DataLoss(f"{what}: {encoding} body ends before its stream does")


__all__ = ["decoded", "encoding_of"]
