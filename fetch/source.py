"""What every source of bytes provides to the ingest task.

A source is opened at an offset (for resume). It says where the stream it returns really
starts: a source that cannot resume (a server that ignored Range) starts at 0 and the
ingest restarts. All failures are errdefs kinds; permanent ones (NotFound, InvalidArgument,
PermissionDenied, Unauthenticated, DataLoss, FailedPrecondition) are not retried,
Unavailable is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Stream(Protocol):
    """A readable byte stream."""

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes; ``b""`` at the end. Errors are errdefs kinds."""
        ...

    def close(self) -> None:
        """Release the connection or file."""
        ...


@dataclass(frozen=True)
class Opened:
    """An opened source: the stream, the offset it starts at, and the total size if known."""

    stream: Stream
    start: int
    size: int | None = None


class Source(Protocol):
    """Bytes that can be fetched, from an offset."""

    @property
    def name(self) -> str:
        """A human-readable name for messages and status (a URL, a path, a reference)."""
        ...

    def open(self, offset: int = 0) -> Opened:
        """Open the bytes at ``offset`` (or at 0 if the source cannot resume)."""
        ...


class Validated(Protocol):
    """A source that can tell whether it still holds the same bytes as when an earlier
    attempt started (HTTP: a strong ETag or Last-Modified, sent as If-Range; files:
    inode, size and mtime). The ingest core records :attr:`validator` after the first
    open and sets :attr:`if_range` before a resume; a source whose bytes changed opens
    at 0, so the ingest restarts instead of mixing two versions."""

    if_range: str | None

    @property
    def validator(self) -> str | None:
        """The validator of the bytes last opened, or None if the source has none."""
        ...
