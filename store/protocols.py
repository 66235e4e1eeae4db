"""The store's small protocols, after containerd's ``content`` package.

A full store is a :class:`Provider` + :class:`Ingester` + :class:`IngestManager` +
:class:`Manager`. Every method reports failures as :mod:`errdefs` kinds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from ingestq.store.digest import Digest
from ingestq.store.values import Descriptor, Info, Status


@runtime_checkable
class ReaderAt(Protocol):
    """Random access to one committed blob. Close it (or use ``with``) when done."""

    @property
    def size(self) -> int:
        """The blob's size in bytes."""
        ...

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``; fewer only at the end. OutOfRange past it."""
        ...

    def close(self) -> None:
        """Release the reader. Closing twice is fine."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


@runtime_checkable
class Writer(Protocol):
    """One ingest's write handle; it holds the ref's lock until commit or close.

    Contract (containerd's): close on an uncommitted writer keeps the ingest for a later
    resume or abort; closing twice is fine; commit always closes the writer, even on error;
    size 0 and expected None mean "unknown".
    """

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` at the current offset and return its length; the caller may
        reuse ``data`` once this returns. ResourceExhausted when the disk is full,
        FailedPrecondition when the writer is closed or its lease was lost."""
        ...

    def digest(self) -> Digest:
        """The digest of every byte written so far."""
        ...

    def status(self) -> Status:
        """This write's Status (offset, total, timestamps, holder)."""
        ...

    def truncate(self, size: int) -> None:
        """Only ``size == 0`` is supported: restart the ingest (InvalidArgument otherwise)."""
        ...

    def commit(
        self, size: int = 0, expected: Digest | None = None, labels: Mapping[str, str] | None = None
    ) -> Info:
        """Check size then digest (FailedPrecondition, ingest kept), publish atomically and
        return the blob's Info. AlreadyExists when the digest is already committed (the
        ingest is then discarded). Always closes the writer."""
        ...

    def close(self) -> None:
        """Release the lock and keep the ingest for resume."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class Provider(Protocol):
    """Reads committed content."""

    def reader_at(self, desc: Descriptor | Digest) -> ReaderAt:
        """A reader for the blob; NotFound if it is not committed."""
        ...


class Ingester(Protocol):
    """Starts or resumes writes."""

    def writer(self, ref: str, expected: Descriptor | None = None, *, total: int = 0) -> Writer:
        """Lock ``ref`` and open its ingest, resuming at the stored offset.

        The ingest's total (its Status's ``total``) is ``expected.size``, or ``total``
        when the caller knows the size but not the digest (0: unknown); a new ingest
        records it, and so does one whose total was unknown.

        Raises InvalidArgument for an empty or malformed ref, or a ``total`` that is
        negative or differs from ``expected.size``; Unavailable when another writer holds
        the ref ("ref <ref> locked for <duration> (since <time>)"); AlreadyExists when
        ``expected.digest`` is already committed; FailedPrecondition when the unfinished
        ingest has another known total ("provided total differs from status: ...").
        """
        ...


class IngestManager(Protocol):
    """Inspects and cancels writes in progress."""

    def status(self, ref: str) -> Status:
        """The Status of ``ref``'s ingest; NotFound if there is none."""
        ...

    def list_statuses(self, *filters: str) -> list[Status]:
        """Every ingest matching any of ``filters`` (containerd syntax, field ``ref``)."""
        ...

    def abort(self, ref: str) -> None:
        """Remove ``ref``'s ingest; NotFound if there is none, Unavailable if it is locked."""
        ...


class Manager(Protocol):
    """Inspects, labels and deletes committed content."""

    def info(self, digest: Digest) -> Info:
        """The blob's Info; NotFound if it is not committed."""
        ...

    def update(self, info: Info, *fieldpaths: str) -> Info:
        """Change labels (paths ``labels`` or ``labels.<key>``; none = replace all).

        An empty value deletes a label. InvalidArgument for any other path or an oversize
        label, NotFound for a missing blob. Returns the new Info.
        """
        ...

    def walk(self, *filters: str) -> Iterator[Info]:
        """Every blob matching any filter (fields ``digest`` and ``labels.*``).

        Filters are parsed before this returns: InvalidArgument on a syntax error.
        """
        ...

    def delete(self, digest: Digest) -> None:
        """Remove a blob; NotFound if it is not committed."""
        ...


@runtime_checkable
class Putter(Protocol):
    """Commits content whose bytes are all in memory in one call (ingestq's extension;
    containerd has no such call). Stores offer it to make small blobs cheap."""

    @property
    def small_blob_max(self) -> int:
        """The largest content (bytes) worth reading into memory for :meth:`put`."""
        ...

    @property
    def check_before_put(self) -> bool:
        """Whether asking for existing content costs much less than :meth:`put` (a
        local disk: True). Where each question is a round trip as costly as the put
        itself (S3, whose put answers AlreadyExists in its one request: False),
        :func:`ingestq.store.helpers.write_blob` reads the source and puts without
        asking first."""
        ...

    def exists(self, digest: Digest) -> bool:
        """Whether ``digest`` is committed: the cheapest question (one HEAD on S3, where
        :meth:`Manager.info` may take two). InvalidArgument for a malformed digest."""
        ...

    def put(
        self,
        ref: str,
        desc: Descriptor,
        data: bytes | bytearray | memoryview,
        labels: Mapping[str, str] | None = None,
    ) -> Info:
        """Commit ``data`` as ``desc`` with ``labels`` and return its Info, as a writer
        for ``ref`` that writes ``data`` and commits would (an unfinished ingest of
        ``ref`` is resumed and dropped), durably and atomically.

        InvalidArgument for a bad ref or labels; FailedPrecondition when ``data`` has
        another size than a known ``desc.size`` or does not hash to ``desc.digest``
        (nothing is kept); AlreadyExists when the content is committed (labels are not
        applied); Unavailable when a writer holds ``ref``'s unfinished ingest;
        ResourceExhausted when it does not fit.
        """
        ...


class Store(Provider, Ingester, IngestManager, Manager, Protocol):
    """All four store protocols together."""
