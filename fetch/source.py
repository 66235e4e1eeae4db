"""The Source protocol: what every source of bytes provides to the ingest core.

A :class:`Source` is opened at an offset (for resume) and answers with an
:class:`Opened`: a :class:`Stream` of the bytes, the offset that stream really starts
at, and the resource's total size when known. A source that cannot resume starts at 0
and the ingest restarts; it never starts anywhere else. A :class:`Validated` source
can also tell whether its bytes changed since an earlier attempt, so a resume never
splices two versions of a resource.

Every failure, at open and while reading, is an errdefs kind. Permanent ones
(NotFound, InvalidArgument, PermissionDenied, Unauthenticated, DataLoss,
FailedPrecondition, Unimplemented, OutOfRange, Unknown) are not retried; Unavailable
is (with a ``retry_after`` detail, in seconds, when the source was told how long to
wait). :mod:`ingestq.fetch.testing` checks all of this for any source.

Also here: :class:`BytesStream`, the Stream of bytes already in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class Stream(Protocol):
    """A readable byte stream."""

    def read(self, n: int = -1, /) -> bytes:
        """For ``n >= 1``, between 1 and ``n`` bytes; for ``n < 0``, everything up to
        the end. ``b""`` only at the end, and on every read after it. Errors are
        errdefs kinds (a body cut short: DataLoss; a stalled or dropped connection:
        Unavailable)."""
        ...

    def close(self) -> None:
        """Release the connection or file. Safe to call more than once, and before the
        end (the rest is not read)."""
        ...


@dataclass(frozen=True)
class Opened:
    """An opened source.

    Attributes:
        stream: the bytes from :attr:`start` to the end of the resource.
        start: the offset of the stream's first byte in the resource: the offset asked
            for, or 0 when the source could not (or would not) resume.
        size: the total size of the resource (not of the rest), or None if unknown.
    """

    stream: Stream
    start: int
    size: int | None = None


class Source(Protocol):
    """Bytes that can be fetched, from an offset."""

    @property
    def name(self) -> str:
        """A human-readable name for messages and status (a URL, a path, a reference);
        stable for the source's life (resume hints are keyed by it)."""
        ...

    def open(self, offset: int = 0) -> Opened:
        """Open the bytes from ``offset`` (``0 <= offset``).

        The returned :attr:`Opened.start` is ``offset`` (the stream continues there) or
        0 (the stream holds the whole resource: the source cannot resume, the validator
        no longer matches, or ``offset`` is beyond the end). At the end (``offset`` equal
        to the size) the stream may be empty at ``offset``. Raises the errdefs kinds of
        the module docstring; a resource that does not exist is NotFound.
        """
        ...


@runtime_checkable
class HostLocal(Protocol):
    """A source whose bytes are on this host (a local file), with no server behind
    them. Reading such bytes twice costs less than coordinating over who reads them, so
    the ingest core puts a small blob of it without the ref's single-flight lock: two
    jobs of one file each read it, and the store commits it once."""

    @property
    def host_local(self) -> bool:
        """True when the bytes are read from this host's own storage."""
        ...


class Validated(Protocol):
    """A source that can tell whether it still holds the same bytes as when an earlier
    attempt started: HTTP by a strong ``ETag`` (else ``Last-Modified``) sent back as
    ``If-Range``, files by device, inode, size and modification time.

    The ingest core reads :attr:`validator` after the first open at 0 and records it;
    before a resume it sets :attr:`if_range` to the recorded value (or None when it has
    none). Then:

    * ``if_range`` None: :meth:`Source.open` resumes unguarded;
    * ``if_range`` equal to the current validator: it resumes at the offset;
    * ``if_range`` different (the bytes changed): it opens at 0, so the ingest restarts
      instead of mixing two versions.
    """

    if_range: str | None

    @property
    def validator(self) -> str | None:
        """The validator of the bytes last opened (at 0 or resumed), or None if the
        source has none for them (no ETag and no Last-Modified). It changes when the
        bytes change."""
        ...


@runtime_checkable
class Conditional(Protocol):
    """A source that can be asked for its bytes only if they changed since a fetch that
    answered with the given validators (HTTP: ``If-None-Match`` / ``If-Modified-Since``).

    After a full open, :attr:`etag` and :attr:`last_modified` are what the source
    answered with (None when it sent none; a weak ETag is no proof of identical bytes
    and reads as None)."""

    @property
    def etag(self) -> str | None:
        """The strong ETag of the bytes last opened, or None."""
        ...

    @property
    def last_modified(self) -> str | None:
        """The Last-Modified of the bytes last opened, or None."""
        ...

    def open_if_changed(self, etag: str | None, last_modified: str | None) -> Opened | None:
        """None when the source still holds the bytes those validators describe (HTTP
        304: nothing is transferred), else the whole resource opened at 0 as
        :meth:`Source.open` would. Errors as :meth:`Source.open`."""
        ...


class BytesStream:
    """A :class:`Stream` over bytes in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes (the rest for ``n < 0``); ``b""`` at the end."""
        end = len(self._data) if n < 0 else min(len(self._data), self._pos + n)
        out = bytes(self._data[self._pos : end])
        self._pos = end
        return out

    def close(self) -> None:
        """Nothing to release."""


__all__ = ["BytesStream", "Conditional", "HostLocal", "Opened", "Source", "Stream", "Validated"]
