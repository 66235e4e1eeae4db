"""In-memory implementations of the store protocols: :class:`MemoryStore` and
:class:`MemoryRefLocker`.

:class:`MemoryStore` is a Provider, Ingester, IngestManager and Manager with the
semantics of the local store (and containerd's): ``writer(ref)`` locks the ref
(Unavailable while another writer holds it) and fails with AlreadyExists for committed
content; commit checks the size, then the digest (FailedPrecondition, the ingest kept
for a resume); a new writer on an unfinished ref resumes at its offset; labels follow
containerd's rules and filters its filter language (:mod:`store.filters`). Nothing is
persisted. It is meant for tests of code written against the protocols, and passes the
same contract suite as the local store (:mod:`ingestq.store.testing.contract`).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Self

from ingestq import errdefs
from ingestq.store.digest import CANONICAL, Digest, new_hasher
from ingestq.store.filters import info_fields, parse, status_fields
from ingestq.store.helpers import put_through_writer
from ingestq.store.labels import apply_update
from ingestq.store.labels import validate as validate_labels
from ingestq.store.locks import Lease, RefLocker, locked_error, new_holder_id
from ingestq.store.rules import (
    check_commit_digest,
    check_commit_size,
    check_read,
    check_resume_total,
    validate_ref,
    writer_total,
)
from ingestq.store.values import Descriptor, Holder, Info, Status, utcnow


class MemoryLease:
    """A lock held from a :class:`MemoryRefLocker`."""

    def __init__(self, locker: MemoryRefLocker, ref: str, holder: Holder) -> None:
        self._locker = locker
        self._ref = ref
        self._holder = holder
        self.lost = False
        self.released = False

    @property
    def ref(self) -> str:
        """The ref this lease locks."""
        return self._ref

    @property
    def holder(self) -> Holder:
        """Who holds it (this process)."""
        return self._holder

    def check(self) -> None:
        """FailedPrecondition once the lease is released or lost."""
        if self.lost:
            raise errdefs.FailedPrecondition(f"lease on ref {self._ref} lost")
        if self.released:
            raise errdefs.FailedPrecondition("ref lock already released")

    def release(self) -> None:
        """Give the lock up. Releasing twice (or after losing it) is fine."""
        self._locker._release(self)


class MemoryRefLocker:
    """A :class:`store.locks.RefLocker` in memory: excludes the threads of one process.

    Thread-safe. Refusals read like every other locker's (``ref <ref> locked for
    <duration> (since <time>)``, Unavailable).
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held: dict[str, MemoryLease] = {}

    def try_lock(self, ref: str, holder_id: str) -> MemoryLease:
        """Take ``ref``'s lock at once or raise Unavailable naming the holder."""
        now = utcnow()
        holder = Holder(holder_id, socket.gethostname(), os.getpid(), now, now)
        with self._mutex:
            current = self._held.get(ref)
            if current is not None:
                h = current.holder
                raise locked_error(ref, h.acquired_at, h)
            lease = MemoryLease(self, ref, holder)
            self._held[ref] = lease
            return lease

    def holder(self, ref: str) -> Holder | None:
        """Who holds ``ref`` now, or None."""
        with self._mutex:
            lease = self._held.get(ref)
        return lease.holder if lease is not None else None

    def _release(self, lease: MemoryLease) -> None:
        with self._mutex:
            lease.released = True
            if self._held.get(lease.ref) is lease:
                del self._held[lease.ref]

    def _drop(self, ref: str) -> MemoryLease | None:
        """Forget ``ref``'s lease without its holder knowing (it is marked lost)."""
        with self._mutex:
            lease = self._held.pop(ref, None)
            if lease is not None:
                lease.lost = True
            return lease


@dataclass
class _Blob:
    data: bytes
    created_at: datetime
    updated_at: datetime
    labels: dict[str, str] = field(default_factory=dict)

    def info(self, digest: Digest) -> Info:
        return Info(digest, len(self.data), self.created_at, self.updated_at, self.labels)


@dataclass(eq=False)
class _Ingest:
    ref: str
    started_at: datetime
    updated_at: datetime
    total: int = 0
    expected: Digest | None = None
    data: bytearray = field(default_factory=bytearray)
    owner: object = None

    def status(self, holder: Holder | None) -> Status:
        return Status(
            self.ref,
            len(self.data),
            self.total,
            self.started_at,
            self.updated_at,
            self.expected,
            holder,
        )


class MemoryReaderAt:
    """A :class:`store.protocols.ReaderAt` over the bytes of one blob (a snapshot: a
    blob deleted meanwhile stays readable to this reader)."""

    def __init__(self, data: bytes, digest: Digest) -> None:
        self._data: bytes | None = data
        self._size = len(data)
        self._digest = digest

    @property
    def size(self) -> int:
        """The blob's size in bytes."""
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer only at the end). OutOfRange
        past the end or below 0, InvalidArgument for a negative length,
        FailedPrecondition once closed."""
        if self._data is None:
            raise errdefs.FailedPrecondition(f"reader for {self._digest} is closed")
        want = check_read(offset, length, self._size)
        return self._data[offset : offset + want]

    def close(self) -> None:
        """Drop the bytes. Closing twice is fine."""
        self._data = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class MemoryWriter:
    """A write into one in-memory ingest, created by :meth:`MemoryStore.writer`.

    Holds the ref's lock until :meth:`commit` or :meth:`close`. Not safe for use by
    several threads at once.
    """

    def __init__(self, store: MemoryStore, ingest: _Ingest, lease: Lease, algorithm: str) -> None:
        self._store = store
        self._ingest = ingest
        self._lease = lease
        self._algorithm = algorithm
        self._hasher = new_hasher(algorithm)
        self._hasher.update(bytes(ingest.data))
        self._closed = False

    @property
    def ref(self) -> str:
        """The ref this writer holds."""
        return self._ingest.ref

    @property
    def lease(self) -> Lease:
        """The lock this writer holds."""
        return self._lease

    def _owned(self) -> _Ingest:
        """The ingest, if this writer may still change it; FailedPrecondition otherwise
        (closed, the lease lost, or the ingest aborted or taken over)."""
        if self._closed:
            raise errdefs.FailedPrecondition(f"writer for {self.ref} is closed")
        self._lease.check()
        if not self._store._owns(self._ingest, self):
            raise errdefs.FailedPrecondition(
                f"ingest {self.ref} was aborted or taken over by another writer"
            )
        return self._ingest

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; returns ``len(data)``. FailedPrecondition when the writer is
        closed or has lost its ref."""
        ingest = self._owned()
        view = memoryview(data).cast("B")
        ingest.data += view
        self._hasher.update(view)
        ingest.updated_at = utcnow()
        return len(view)

    def digest(self) -> Digest:
        """The digest of every byte written so far (the empty digest for none)."""
        return Digest(self._algorithm, self._hasher.hexdigest())

    def status(self) -> Status:
        """This write's Status (with the holder of its lock)."""
        return self._ingest.status(self._lease.holder)

    def truncate(self, size: int) -> None:
        """Restart the ingest from zero. Only ``size == 0`` is supported (InvalidArgument
        otherwise); FailedPrecondition when closed."""
        if size != 0:
            raise errdefs.InvalidArgument(f"truncate {self.ref}: only size 0 is supported")
        ingest = self._owned()
        ingest.data = bytearray()
        self._hasher = new_hasher(self._algorithm)
        ingest.updated_at = utcnow()

    def commit(
        self, size: int = 0, expected: Digest | None = None, labels: Mapping[str, str] | None = None
    ) -> Info:
        """Check the size (if ``size > 0``) then the digest (if ``expected``) and
        publish the blob. FailedPrecondition for a wrong size or digest, a closed writer
        or a lost ref (the ingest is kept); AlreadyExists when the content is committed
        (the ingest is dropped); InvalidArgument for bad labels. Always closes."""
        try:
            if self._closed:
                raise errdefs.FailedPrecondition("cannot commit on closed writer")
            new_labels = {k: v for k, v in (labels or {}).items() if v != ""}
            validate_labels(new_labels)
            want = Digest.parse(expected) if expected else None
            ingest = self._owned()
            check_commit_size(self.ref, len(ingest.data), size)
            digest = self.digest()
            if want is not None and want.algorithm != self._algorithm:
                digest = Digest.from_bytes(bytes(ingest.data), want.algorithm)
            check_commit_digest(digest, want)
            return self._store._publish(ingest, self, digest, new_labels)
        finally:
            self.close()

    def close(self) -> None:
        """Release the lock and keep the ingest for a resume. Closing twice is fine."""
        if not self._closed:
            self._closed = True
            self._store._disown(self._ingest, self)
        self._lease.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class MemoryStore:
    """A :class:`store.protocols.Store` in memory (see the module docstring).

    Thread-safe. ``locker`` hands out the ref locks (a :class:`MemoryRefLocker` by
    default; a :class:`ingestq.store.testing.FakeRefLocker` lets a test take and lose
    locks).
    """

    def __init__(self, locker: RefLocker | None = None) -> None:
        self.locker: RefLocker = locker if locker is not None else MemoryRefLocker()
        #: The largest content :meth:`put` commits without an ingest.
        self.small_blob_max = 1 << 20
        #: Existence checks are cheap: write_blob asks before reading its source.
        self.check_before_put = True
        self._mutex = threading.RLock()
        self._blobs: dict[Digest, _Blob] = {}
        self._ingests: dict[str, _Ingest] = {}

    # Provider --------------------------------------------------------------------------
    def reader_at(self, desc: Descriptor | Digest | str) -> MemoryReaderAt:
        """A reader for the blob; NotFound if it is not committed."""
        digest = desc.digest if isinstance(desc, Descriptor) else Digest.parse(desc)
        with self._mutex:
            blob = self._blobs.get(digest)
        if blob is None:
            raise errdefs.NotFound(f"content {digest}")
        return MemoryReaderAt(blob.data, digest)

    # Ingester --------------------------------------------------------------------------
    def writer(
        self, ref: str, expected: Descriptor | None = None, *, total: int = 0
    ) -> MemoryWriter:
        """Lock ``ref`` and open its ingest, resuming at its offset; its total is
        ``expected.size`` or ``total`` (see :meth:`store.protocols.Ingester.writer`).

        InvalidArgument for a bad ref or total; Unavailable when the ref is locked;
        AlreadyExists when ``expected.digest`` is committed; FailedPrecondition when the
        total differs from the one the ingest started with.
        """
        validate_ref(ref)
        total = writer_total(ref, expected, total)
        digest = Digest.parse(expected.digest) if expected is not None else None
        if digest is not None and self.exists(digest):
            raise errdefs.AlreadyExists(f"content {digest}")
        lease = self.locker.try_lock(ref, new_holder_id())
        try:
            with self._mutex:
                if digest is not None and digest in self._blobs:
                    raise errdefs.AlreadyExists(f"content {digest}")
                ingest = self._ingests.get(ref)
                if ingest is None:
                    now = utcnow()
                    ingest = _Ingest(ref, now, now, total, digest)
                    self._ingests[ref] = ingest
                else:
                    check_resume_total(ref, total, ingest.total)
                    ingest.total = ingest.total or total
                    ingest.expected = digest or ingest.expected
                algorithm = digest.algorithm if digest is not None else CANONICAL
                writer = MemoryWriter(self, ingest, lease, algorithm)
                ingest.owner = writer
                return writer
        except BaseException:
            lease.release()
            raise

    def put(
        self,
        ref: str,
        desc: Descriptor,
        data: bytes | bytearray | memoryview,
        labels: Mapping[str, str] | None = None,
    ) -> Info:
        """Commit ``data`` as ``desc`` in one call (see :meth:`store.protocols.Putter.put`):
        without an ingest when ``ref`` has none, else through :meth:`writer`
        (:func:`store.helpers.put_through_writer`). InvalidArgument, FailedPrecondition,
        AlreadyExists and Unavailable as there."""
        validate_ref(ref)
        digest = Digest.parse(desc.digest)
        new_labels = {k: v for k, v in (labels or {}).items() if v != ""}
        validate_labels(new_labels)
        content = bytes(data)
        check_commit_size(ref, len(content), desc.size)
        check_commit_digest(Digest.from_bytes(content, digest.algorithm), digest)
        with self._mutex:
            by_writer = ref in self._ingests
        if by_writer:
            return put_through_writer(self, ref, desc, content, new_labels)
        with self._mutex:
            if digest in self._blobs:
                raise errdefs.AlreadyExists(f"content {digest}")
            now = utcnow()
            blob = _Blob(content, now, now, new_labels)
            self._blobs[digest] = blob
            return blob.info(digest)

    def _owns(self, ingest: _Ingest, writer: MemoryWriter) -> bool:
        with self._mutex:
            return ingest.owner is writer and self._ingests.get(ingest.ref) is ingest

    def _disown(self, ingest: _Ingest, writer: MemoryWriter) -> None:
        with self._mutex:
            if ingest.owner is writer:
                ingest.owner = None

    def _publish(
        self, ingest: _Ingest, writer: MemoryWriter, digest: Digest, labels: Mapping[str, str]
    ) -> Info:
        with self._mutex:
            if not self._owns(ingest, writer):
                raise errdefs.FailedPrecondition(
                    f"ingest {ingest.ref} was aborted or taken over by another writer"
                )
            del self._ingests[ingest.ref]
            if digest in self._blobs:
                raise errdefs.AlreadyExists(f"content {digest}")
            now = utcnow()
            blob = _Blob(bytes(ingest.data), now, now, dict(labels))
            self._blobs[digest] = blob
            return blob.info(digest)

    # IngestManager ---------------------------------------------------------------------
    def status(self, ref: str) -> Status:
        """The Status of ``ref``'s ingest (holder: who holds the lock now, if anyone).
        NotFound if there is none; InvalidArgument for a bad ref."""
        validate_ref(ref)
        with self._mutex:
            ingest = self._ingests.get(ref)
            if ingest is None:
                raise errdefs.NotFound(f"reference {ref}")
            return ingest.status(self.locker.holder(ref))

    def list_statuses(self, *filters: str) -> list[Status]:
        """Every ingest whose ref matches any filter (field ``ref``), sorted by ref.
        InvalidArgument for a malformed filter."""
        flt = parse(*filters)
        with self._mutex:
            ingests = sorted(self._ingests.values(), key=lambda i: i.ref)
            matching = [i for i in ingests if flt.match(status_fields(i.ref))]
            return [i.status(self.locker.holder(i.ref)) for i in matching]

    def abort(self, ref: str) -> None:
        """Remove ``ref``'s ingest. NotFound if there is none, Unavailable while a
        writer holds it, InvalidArgument for a bad ref."""
        validate_ref(ref)
        with self._mutex:
            if ref not in self._ingests:
                raise errdefs.NotFound(f"reference {ref}")
        lease = self.locker.try_lock(ref, new_holder_id())
        try:
            with self._mutex:
                if self._ingests.pop(ref, None) is None:
                    raise errdefs.NotFound(f"reference {ref}")
        finally:
            lease.release()

    # Manager ---------------------------------------------------------------------------
    def exists(self, digest: Digest | str) -> bool:
        """Whether ``digest`` is committed (InvalidArgument for a malformed digest)."""
        d = Digest.parse(digest)
        with self._mutex:
            return d in self._blobs

    def info(self, digest: Digest | str) -> Info:
        """The blob's Info; NotFound if it is not committed."""
        d = Digest.parse(digest)
        with self._mutex:
            blob = self._blobs.get(d)
            if blob is None:
                raise errdefs.NotFound(f"content {d}")
            return blob.info(d)

    def update(self, info: Info, *fieldpaths: str) -> Info:
        """Change labels along ``fieldpaths`` (``labels``, ``labels.<key>``; none
        replaces all). InvalidArgument for another path or an oversize label, NotFound
        for a missing blob. Returns the new Info."""
        d = Digest.parse(info.digest)
        with self._mutex:
            blob = self._blobs.get(d)
            if blob is None:
                raise errdefs.NotFound(f"content {d}")
            blob.labels = apply_update(blob.labels, info.labels, tuple(fieldpaths), str(d))
            blob.updated_at = utcnow()
            return blob.info(d)

    def walk(self, *filters: str) -> Iterator[Info]:
        """Every committed blob matching any filter (fields ``digest``, ``labels.<key>``),
        by algorithm then digest. Filters are parsed before this returns
        (InvalidArgument)."""
        flt = parse(*filters)
        with self._mutex:
            infos = [b.info(d) for d, b in self._blobs.items()]
        infos.sort(key=lambda i: (i.digest.algorithm, i.digest.encoded))
        return iter([i for i in infos if flt.match(info_fields(i))])

    def delete(self, digest: Digest | str) -> None:
        """Remove a blob and its labels; NotFound if it is not committed."""
        d = Digest.parse(digest)
        with self._mutex:
            if self._blobs.pop(d, None) is None:
                raise errdefs.NotFound(f"content digest {d}")


__all__ = ["MemoryLease", "MemoryReaderAt", "MemoryRefLocker", "MemoryStore", "MemoryWriter"]
