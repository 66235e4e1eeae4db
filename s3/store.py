"""The S3 store: :class:`S3Store`, a :class:`ingestq.store.protocols.Store` whose blobs,
metadata and partial ingests live in a bucket (see :mod:`ingestq.s3.location`), with the
local store's (and containerd's) semantics.

* A blob is published only after its size and digest are verified, with a conditional
  create (``If-None-Match: *``): a second writer of the same digest gets AlreadyExists,
  and on a server without conditional writes a duplicate write of a content-addressed
  key is harmless.
* An ingest is a multipart upload. Bytes below the part size are buffered (small blobs
  take one PUT); a closing writer stores its buffer as the ingest's *tail*. The ingest
  record holds the parts it vouches for and the hash state after the last of them; a
  writer that adopts the ingest (after a close or a crash) checks those parts against
  the server's ListParts (number, size, ETag), restores the state and re-hashes the
  tail it reads back, so it continues with the next part. Anything that does not match
  starts the ingest over.
* An ingest that knows its digest uploads straight to the blob's key; one that does not
  uploads to a staging key and is copied on the server at commit.
* Ref locks come from the locker the store is given (the Redis lease on workers); the
  store is correct without them.
* Image records and leases live in the bucket too (:meth:`S3Store.image_index`,
  :meth:`S3Store.leases`). Only ``root`` is local: ref lock files, resume hints and
  embedded job records.
* A publish that writes labels holds the blob's lock (:mod:`ingestq.s3.bloblock`,
  through the locker) from the blob's PUT to its metadata's, as gc takes it before it
  re-reads a candidate's labels.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ingestq import errdefs
from ingestq.s3.bloblock import blob_lock
from ingestq.s3.bucket import Bucket
from ingestq.s3.errors import from_s3_error
from ingestq.s3.hashstate import StateHasher
from ingestq.s3.images import S3ImageIndex
from ingestq.s3.leases import S3LeaseStore
from ingestq.s3.location import S3Location
from ingestq.s3.records import (
    IngestRecord,
    Part,
    Upload,
    meta_from_bytes,
    meta_to_bytes,
    record_from_bytes,
    record_to_bytes,
)
from ingestq.store.budget import Budget, human
from ingestq.store.codec import BlobMeta
from ingestq.store.digest import CANONICAL, Digest, new_hasher
from ingestq.store.filters import info_fields, parse, status_fields
from ingestq.store.helpers import put_through_writer
from ingestq.store.labels import apply_update
from ingestq.store.labels import validate as validate_labels
from ingestq.store.locks import FileRefLocker, Lease, RefLocker, new_holder_id
from ingestq.store.rules import (
    check_commit_digest,
    check_commit_size,
    check_read,
    check_resume_total,
    validate_ref,
    writer_total,
)
from ingestq.store.values import Descriptor, Info, Status, utcnow

#: User metadata keys (``x-amz-meta-*``) of a blob published with no metadata object.
TIME_CREATED = "ingestq-created-at"
TIME_UPDATED = "ingestq-updated-at"
#: S3's smallest part (all but the last).
MIN_PART_SIZE = 5 * 1024**2
#: The part size writers upload (bytes below it are buffered).
DEFAULT_PART_SIZE = 8 * 1024**2
#: Parts a writer uploads at once.
DEFAULT_UPLOAD_CONCURRENCY = 4
#: How often a writer refreshes the offset other hosts see while it writes, seconds.
LIVE_INTERVAL = 0.5
#: Attempts of a conditional metadata update that keeps meeting concurrent updates.
UPDATE_ATTEMPTS = 20
#: How old the listing of ingest records :meth:`S3Store.put` consults may be, seconds.
INGEST_LIST_TTL = 2.0


def _times_metadata(now: datetime) -> dict[str, str]:
    """The times a blob published without a metadata object carries as user metadata."""
    stamp = now.isoformat()
    return {TIME_CREATED: stamp, TIME_UPDATED: stamp}


def _times_of(metadata: Mapping[str, str], modified: datetime) -> tuple[datetime, datetime]:
    """The (created, updated) times of :func:`_times_metadata`, else ``modified``."""
    try:
        return (
            datetime.fromisoformat(metadata[TIME_CREATED]),
            datetime.fromisoformat(metadata[TIME_UPDATED]),
        )
    except (KeyError, ValueError):
        return modified, modified


class S3ReaderAt:
    """A :class:`ingestq.store.protocols.ReaderAt` over one blob: each read is a ranged
    GET."""

    def __init__(self, bucket: Bucket, key: str, size: int, digest: Digest) -> None:
        self._bucket = bucket
        self._key = key
        self._size = size
        self._digest = digest
        self._closed = False

    @property
    def size(self) -> int:
        """The blob's size in bytes."""
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer only at the end). OutOfRange
        past the end, FailedPrecondition once closed, NotFound if the blob was deleted,
        DataLoss on a short answer."""
        if self._closed:
            raise errdefs.FailedPrecondition(f"reader for {self._digest} is closed")
        want = check_read(offset, length, self._size)
        if want == 0:
            return b""
        try:
            data, _ = self._bucket.get(self._key, (offset, offset + want - 1))
        except errdefs.NotFound:
            raise errdefs.NotFound(f"content {self._digest}") from None
        if len(data) != want:
            raise errdefs.DataLoss(
                f"read of {self._digest} at {offset}: got {len(data)} bytes, want {want}"
            )
        return data

    def close(self) -> None:
        """Close the reader. Closing twice is fine."""
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True)
class _InFlight:
    """A part being uploaded: the hash state after it, and the upload's future ETag."""

    number: int
    size: int
    state: str
    etag: Future[str]
    holds_tail: bool


class S3Writer:
    """A write into one ingest of an :class:`S3Store`, made by :meth:`S3Store.writer`.

    Full parts are uploaded in the background, up to ``store.upload_concurrency`` at
    once; once a part and every part before it are uploaded, the record vouches for it
    (with the hash state after it): at once when no other part is in flight, so a writer
    killed while its source stalls loses nothing that reached the server, else at the
    next refresh (at most every LIVE_INTERVAL), so a steady stream costs no record
    write per part and a crash at most the parts uploaded since. Record PUTs go one at
    a time on the upload threads, each sending the newest record. A failed part upload
    closes the writer: the ingest keeps the parts vouched for, and the next writer
    continues after them.

    Holds the ref's lock until :meth:`commit` or :meth:`close`. One thread at a time
    calls its methods (the upload threads only vouch for parts and save the record).
    """

    def __init__(
        self,
        store: S3Store,
        rec: IngestRecord,
        lease: Lease,
        hasher: StateHasher,
        tail: bytes,
    ) -> None:
        self._store = store
        self._rec = rec
        self._lease = lease
        self._hasher = hasher  # over every part, uploaded or in flight
        # The bytes of the part being filled: _buf[:_fill]. A full part's buffer goes to
        # its upload as it is (no copy) and comes back to _spares when that ends.
        self._buf = bytearray(tail)
        self._fill = len(tail)
        self._spares: list[bytearray] = []
        self._stored_tail = len(tail)
        self._in_flight: deque[_InFlight] = deque()
        self._error: BaseException | None = None
        self._mutex = threading.RLock()
        self._closed = False
        self._done = False
        self._saved_at = time.monotonic()
        # Record PUTs go one at a time, each sending the newest record (_put_record);
        # refreshes run in the background (_save_soon) until commit or close stops them.
        self._put_lock = threading.Lock()
        self._put_rec: IngestRecord | None = None  # the record last sent
        self._bg_saves = True
        self._bg_queued = False
        self._last_write = rec.updated_at  # a reopen is not a write
        self._limit: int | None = None  # the most bytes the budget lets it hold
        self._relieved = False  # the store's on_pressure hook ran for this writer
        # A new ingest of known digest below the part size, written whole by its first
        # write: that write saves nothing (the commit follows), and the commit puts the
        # blob with its times and no metadata object unless it has labels.
        self._quick = False

    @property
    def ref(self) -> str:
        """The ref this writer holds."""
        return self._rec.ref

    @property
    def lease(self) -> Lease:
        """The lock this writer holds."""
        return self._lease

    @property
    def _written(self) -> int:
        vouched = self._rec.upload.size if self._rec.upload is not None else 0
        return vouched + sum(f.size for f in self._in_flight) + self._fill

    def _buffered(self) -> bytes:
        """A copy of the bytes past the parts (below the part size)."""
        return bytes(memoryview(self._buf)[: self._fill])

    def _hash_buffered(self, h: Any) -> None:
        """Feed the bytes past the parts to the hasher ``h`` (no copy)."""
        with memoryview(self._buf) as whole, whole[: self._fill] as view:
            h.update(view)

    def _clear_buffer(self) -> None:
        self._buf = bytearray()
        self._fill = 0

    def _append(self, view: memoryview) -> None:
        """Buffer ``view``, starting the upload of each part it fills."""
        part = self._store.part_size
        while view.nbytes:
            buf, fill = self._buf, self._fill
            if fill == len(buf) and fill < part:
                n = min(part - fill, view.nbytes)
                buf += view[:n]  # a fresh buffer grows as it fills
            else:
                n = min(len(buf) - fill, view.nbytes)
                buf[fill : fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            while self._fill >= part:
                self._start_part(self._take_part())

    def _take_part(self) -> bytearray:
        """The first part's bytes of the buffer, which then holds the rest."""
        part, buf = self._store.part_size, self._buf
        if len(buf) == part == self._fill:
            chunk = buf
            rest = memoryview(b"")
        else:  # a stored tail longer than this store's part size
            chunk = buf[:part]
            rest = memoryview(bytes(buf[part : self._fill]))
        self._buf = self._spares.pop() if self._spares else bytearray()
        self._fill = 0
        if rest.nbytes:
            self._buf[: rest.nbytes] = rest
            self._fill = rest.nbytes
        return chunk

    def _check(self) -> None:
        if self._closed:
            raise errdefs.FailedPrecondition(f"writer for {self.ref} is closed")
        self._lease.check()

    def _refresh(self) -> None:
        self._rec = self._rec.with_(offset=self._written, updated_at=self._last_write)
        self._saved_at = time.monotonic()

    def _save(self) -> None:
        """Bring the record up to date and PUT it now (errors raise)."""
        self._refresh()
        self._put_record()

    def _put_record(self) -> None:
        with self._put_lock:
            rec = self._rec
            if rec is not self._put_rec:
                self._store._put_record(rec)
                self._put_rec = rec

    def _save_soon(self) -> None:
        """Bring the record up to date and PUT it on an upload thread (a failure
        closes the writer at its next call, as a failed part upload does)."""
        self._refresh()
        if self._bg_saves and not self._bg_queued:
            self._bg_queued = True
            self._store._uploads().submit(self._save_in_background)

    def _save_in_background(self) -> None:
        with self._mutex:
            self._bg_queued = False
        try:
            with self._put_lock:
                if not self._bg_saves or not self._owned():
                    return  # a writer that lost its lease must not touch the record
                rec = self._rec
                if rec is not self._put_rec:
                    self._store._put_record(rec)
                    self._put_rec = rec
        except BaseException as e:
            with self._mutex:
                self._error = self._error or e

    def _stop_background_saves(self) -> None:
        """No background PUT of the record from now on (one under way is waited for)."""
        with self._put_lock:
            self._bg_saves = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; returns its length. Full parts are uploaded as they fill.
        FailedPrecondition when closed or the lease is lost; ResourceExhausted after
        writing what fits when the budget has no room for all of it; Unavailable and the other
        kinds of :func:`ingestq.s3.errors.from_s3_error` when S3 fails (the writer is
        then closed)."""
        if self._limit is not None and not self._relieved and self._store.on_pressure:
            with self._mutex:
                pressed = self._over_budget(memoryview(data).nbytes) > 0
            if pressed:
                self._relieve()
        with self._mutex:
            self._raise_failure()
            self._check()
            view = memoryview(data).cast("B")
            over = self._over_budget(view.nbytes)
            if over:
                view = view[: view.nbytes - over]
            self._last_write = utcnow()
            self._append(view)
            # Others see the live offset: at once when the record last sent shows
            # nothing beyond what is stored, then refreshed at most every LIVE_INTERVAL.
            if self._quick and self._written != self._rec.total:
                self._quick = False  # written piecemeal: others see its progress
            if not self._quick:
                shown = self._put_rec
                if shown is None or shown.offset <= shown.persisted:
                    self._save()
                elif self._save_due():
                    self._save_soon()
            backlog = len(self._in_flight) > self._store.upload_concurrency
        if backlog:
            self._wait(everything=False)
        if over:
            cap = self._store.budget.max_bytes
            raise errdefs.ResourceExhausted(
                f"ingest {self.ref}: store budget of {cap} bytes (INGESTQ_MAX_BYTES) reached "
                f"at offset {self._written}, {over} more bytes not written"
            )
        return view.nbytes

    def _relieve(self) -> None:
        """Once per writer, before it stops at the budget: bring the record up to date
        with every uploaded part, run the store's ``on_pressure`` hook (a gc) and
        measure the room again."""
        self._relieved = True
        self._check()
        self._wait(everything=True)
        with self._mutex:
            self._save()  # the listing now counts exactly what this ingest holds
        hook, cap = self._store.on_pressure, self._store.budget.max_bytes
        if hook is None or cap is None:
            return
        hook()
        others = self._store.used() - self._rec.persisted
        with self._mutex:
            self._limit = max(cap - others, 0)

    def _over_budget(self, n: int) -> int:
        """How many of ``n`` more bytes the budget has no room for."""
        if self._limit is None:
            return 0
        return max(self._written + n - self._limit, 0)

    def _start_part(self, chunk: bytearray) -> None:
        store, up = self._store, self._rec.upload
        if up is None:
            expected = self._rec.expected
            if expected is not None and expected.algorithm == self._rec.algorithm:
                key = store.location.blob(expected)
            else:
                key = store.location.staging(self.ref, uuid.uuid4().hex[:16])
            up = Upload(store.bucket.create_upload(key), key)
            self._rec = self._rec.with_(upload=up)
            # In the background: the record names the upload so that it is aborted with
            # the ingest; one left unnamed by a crash meanwhile is a stray upload gc aborts.
            self._save_soon()
        # The first part after a resume carries the stored tail.
        holds_tail = self._stored_tail > 0 and not self._in_flight
        self._stored_tail = 0
        number = len(up.parts) + len(self._in_flight) + 1
        self._hasher.update(chunk)
        etag = store._uploads().submit(store.bucket.upload_part, up.key, up.id, number, chunk)
        self._in_flight.append(
            _InFlight(number, len(chunk), self._hasher.state().hex(), etag, holds_tail)
        )
        etag.add_done_callback(lambda _: self._spares.append(chunk))
        etag.add_done_callback(self._part_done)

    def _part_done(self, _: Future[str]) -> None:
        """On an upload thread, when a part upload ends: vouch for what is in order."""
        with self._mutex:
            if self._closed or not self._owned():
                return  # a writer that lost its lease must not touch the record
            try:
                self._vouch()
            except BaseException as e:
                self._error = self._error or e

    def _vouch(self) -> None:
        """Record every uploaded part that follows the vouched ones; note a failure."""
        gained = False
        while self._in_flight and self._in_flight[0].etag.done() and self._error is None:
            head = self._in_flight[0]
            error = head.etag.exception()
            if error is not None:
                self._error = error
                break
            self._in_flight.popleft()
            up = self._rec.upload
            assert up is not None
            parts = (*up.parts, Part(head.number, head.size, head.etag.result()))
            self._rec = self._rec.with_(upload=Upload(up.id, up.key, parts, head.state))
            gained = True
            if head.holds_tail:
                # The stored tail is in a vouched part now: the record must stop
                # pointing at it before the tail object goes.
                self._rec = self._rec.with_(tail=0)
                self._save()
                gained = False
                self._store.bucket.delete(self._store.location.tail(self.ref))
        # Saved when nothing more is in flight (so a writer whose source stalls is
        # killed with every uploaded part vouched for), else at most every
        # LIVE_INTERVAL: a crash costs at most the re-upload of the parts since.
        if gained and (not self._in_flight or self._save_due()):
            self._save_soon()

    def _save_due(self) -> bool:
        return time.monotonic() - self._saved_at >= LIVE_INTERVAL

    def _wait(self, *, everything: bool) -> None:
        """Wait for every part in flight (or the first), then vouch for them. Raises
        (and closes the writer) when an upload failed."""
        with self._mutex:
            pending = [f.etag for f in self._in_flight]
        if not everything:
            pending = pending[:1]
        wait_futures(pending)
        with self._mutex:
            if not self._closed:
                self._check()
                self._vouch()
            self._raise_failure()

    def _raise_failure(self) -> None:
        """If an upload failed: wait for the others, keep only what is vouched for (the
        stored tail too, unless a vouched part holds it), close, and raise."""
        error = self._error
        if error is None:
            return
        self._error = None
        wait_futures([f.etag for f in self._in_flight])
        self._in_flight.clear()
        self._clear_buffer()
        self._closed = True
        try:
            self._stop_background_saves()
            if self._owned():
                self._rec = self._rec.with_(offset=self._rec.persisted, updated_at=utcnow())
                self._put_record()
        finally:
            self._lease.release()
        raise from_s3_error(error, f"upload of {self.ref}") from error

    def digest(self) -> Digest:
        """The digest of every byte written so far."""
        with self._mutex:
            h = self._hasher.copy()
            self._hash_buffered(h)
            return Digest(self._rec.algorithm, h.hexdigest())

    def status(self) -> Status:
        """This write's Status (with the holder of its lock)."""
        with self._mutex:
            r = self._rec
            return Status(
                r.ref,
                self._written,
                r.total,
                r.started_at,
                self._last_write,
                r.expected,
                self._lease.holder,
            )

    def truncate(self, size: int) -> None:
        """Start the ingest over (a new upload). Only ``size == 0`` (InvalidArgument
        otherwise); FailedPrecondition when closed."""
        if size != 0:
            raise errdefs.InvalidArgument(f"truncate {self.ref}: only size 0 is supported")
        self._check()
        self._wait(everything=True)
        with self._mutex:
            self._store._drop_upload(self._rec)
            if self._rec.tail:
                self._store.bucket.delete(self._store.location.tail(self.ref))
            self._rec = self._rec.with_(upload=None, tail=0)
            self._clear_buffer()
            self._stored_tail = 0
            self._hasher = StateHasher(self._rec.algorithm)
            self._last_write = utcnow()
            self._save()

    def commit(
        self, size: int = 0, expected: Digest | None = None, labels: Mapping[str, str] | None = None
    ) -> Info:
        """Check the size (if ``size > 0``) then the digest (if ``expected``) and
        publish the blob. FailedPrecondition for a wrong size or digest, a closed writer
        or a lost lease (the ingest is kept); AlreadyExists when the digest is committed
        (the ingest is dropped); InvalidArgument for bad labels. Always closes."""
        try:
            if self._closed:
                raise errdefs.FailedPrecondition("cannot commit on closed writer")
            new_labels = {k: v for k, v in (labels or {}).items() if v != ""}
            validate_labels(new_labels)
            want = Digest.parse(expected) if expected else None
            self._check()
            self._stop_background_saves()  # the publish drops the record
            self._wait(everything=True)
            check_commit_size(self.ref, self._written, size)
            digest = self.digest()
            if want is not None and want.algorithm != digest.algorithm:
                if self._rec.upload is not None:
                    raise errdefs.FailedPrecondition(
                        f"ingest {self.ref} is hashed with {digest.algorithm}; "
                        f"cannot verify {want} (abort it and write it again)"
                    )
                h = new_hasher(want.algorithm)
                self._hash_buffered(h)
                digest = Digest(want.algorithm, h.hexdigest())
            check_commit_digest(digest, want)
            info = self._store._publish(
                self._rec, self._buffered(), digest, new_labels, quick=self._quick
            )
            self._done = True
            return info
        except errdefs.AlreadyExists:
            self._done = True
            raise
        finally:
            self.close()

    def close(self) -> None:
        """Wait for the parts in flight, keep the buffered bytes as the ingest's tail
        and release the lock. Closing twice is fine."""
        if self._closed:
            return
        try:
            self._stop_background_saves()
            if not self._done and self._owned():
                self._wait(everything=True)
                with self._mutex:
                    tail_key = self._store.location.tail(self.ref)
                    buffered = self._fill
                    if buffered != self._stored_tail or self._rec.tail != buffered:
                        if buffered:
                            self._store.bucket.put(tail_key, self._buffered())
                        elif self._rec.tail:
                            self._store.bucket.delete(tail_key)
                        self._rec = self._rec.with_(tail=buffered)
                    self._save()
        finally:
            with self._mutex:
                self._closed = True
            self._lease.release()

    def _owned(self) -> bool:
        try:
            self._lease.check()
        except errdefs.FailedPrecondition:
            return False
        return True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class S3Store:
    """A :class:`ingestq.store.protocols.Store` in an S3 bucket (see the module
    docstring).

    Args:
        location: the bucket and key prefix.
        client: a boto3 S3 client (:func:`ingestq.s3.client.make_client`).
        root: a host-local directory for what stays local (resume hints, job records,
            and the default ref locks ``<root>/locks``).
        locker: the ref locks; the host's file locks under ``root`` by default. Give
            every host the same cross-host locker (the Redis lease) in production.
        part_size: the multipart part size (at least 5 MiB, S3's minimum).
        upload_concurrency: parts a writer uploads at once (each writer holds up to
            that many parts in memory, plus the one it fills).
        budget: the cap on the bytes blobs and ingests hold in the bucket
            (``max_bytes``; a ``min_free`` is Unimplemented: there is no filesystem).
            The use is a listing (:meth:`used`), taken when a writer opens: one of
            known total that does not fit is ResourceExhausted before anything is
            written; one of unknown total stops at the cap (ResourceExhausted, keeping
            what it wrote). Before either refusal (and a small put's) the
            :attr:`on_pressure` hook, when set, runs once and the use is listed again.
        conditional_writes: whether the server honours ``If-None-Match: *`` on PUT,
            CompleteMultipartUpload and CopyObject (AWS S3, SeaweedFS, MinIO do). Then a
            publish is one conditional request, and exactly one of several writers of a
            digest succeeds. Set it False for servers that ignore the header: each
            publish is then preceded by a HEAD (two racing writers may both write the
            same bytes, which is harmless, and the later one's labels win).
        ingest_list_ttl: how old (seconds) the listing of ingest records may be that
            :meth:`put` consults to send a ref with an unfinished ingest through
            :meth:`writer` (see :meth:`_may_have_ingest`).
    """

    def __init__(
        self,
        location: S3Location,
        client: Any,
        root: str | Path,
        *,
        locker: RefLocker | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        conditional_writes: bool = True,
        upload_concurrency: int = DEFAULT_UPLOAD_CONCURRENCY,
        budget: Budget | None = None,
        ingest_list_ttl: float = INGEST_LIST_TTL,
    ) -> None:
        budget = budget if budget is not None else Budget()
        if budget.min_free is not None:
            raise errdefs.Unimplemented(
                "a free-space reserve (INGESTQ_MIN_FREE) is not supported on an s3:// store"
            )
        if part_size < MIN_PART_SIZE:
            raise errdefs.InvalidArgument(f"part size {part_size} is below S3's 5 MiB minimum")
        self.location = location
        self.bucket = Bucket(client, location.bucket)
        self.root = Path(root).absolute()
        self.locker: RefLocker = (
            locker if locker is not None else FileRefLocker(self.root / "locks")
        )
        self.part_size = part_size
        self.conditional_writes = conditional_writes
        self.upload_concurrency = max(1, upload_concurrency)
        self.budget = budget
        #: Called once before a write that breaks the budget is refused (a gc, with
        #: INGESTQ_GC_ON_PRESSURE); the room is then measured again.
        self.on_pressure: Callable[[], object] | None = None
        self._bucket_seen = False  # a read has found the bucket
        # The ingest records put() consults: a listing at most INGEST_LIST_TTL old, plus
        # the ingests this store opened since (see _may_have_ingest).
        self._ingest_keys: set[str] = set()
        self.ingest_list_ttl = ingest_list_ttl
        self._ingests_listed: float | None = None
        self._opened: set[str] = set()
        self._ingests_mutex = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = -1
        self._pool_mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"<S3Store {self.location}>"

    def _uploads(self) -> ThreadPoolExecutor:
        """The threads part uploads run on (made on first use in each process)."""
        with self._pool_mutex:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(
                    self.upload_concurrency * 2, thread_name_prefix="s3-parts"
                )
                self._pool_pid = os.getpid()
            return self._pool

    # records ---------------------------------------------------------------------------
    def _put_record(self, rec: IngestRecord) -> None:
        self.bucket.put(self.location.ingest(rec.ref), record_to_bytes(rec))

    def _record(self, ref: str) -> IngestRecord | None:
        found = self.bucket.get_or_none(self.location.ingest(ref))
        return record_from_bytes(found[0]) if found is not None else None

    def _drop_upload(self, rec: IngestRecord) -> None:
        if rec.upload is not None:
            self.bucket.abort_upload(rec.upload.key, rec.upload.id)

    def _drop_ingest(self, rec: IngestRecord) -> None:
        self._drop_upload(rec)
        self.bucket.delete(self.location.tail(rec.ref))
        self._drop_record(rec.ref)

    def _drop_record(self, ref: str) -> None:
        key = self.location.ingest(ref)
        self.bucket.delete(key)
        with self._ingests_mutex:
            self._opened.discard(key)
            self._ingest_keys.discard(key)

    def _may_have_ingest(self, ref: str) -> bool:
        """Whether ``ref`` may have an ingest record, without a request per call: from a
        listing of the records at most :attr:`ingest_list_ttl` old, and the ingests this
        store opened since. An ingest another host opened (and left) after that listing
        is missed: :meth:`put` then commits the content beside it, which is harmless
        (that ingest's commit is AlreadyExists, an abort or gc drops it)."""
        key = self.location.ingest(ref)
        with self._ingests_mutex:
            if key in self._opened:
                return True
            last = self._ingests_listed
            if last is None or time.monotonic() - last > self.ingest_list_ttl:
                started = time.monotonic()
                listed = self.bucket.list_objects(self.location.ingests)
                self._ingest_keys = {o.key for o in listed if o.key.endswith(".json")}
                self._ingests_listed = started
            return key in self._ingest_keys

    def _recover(self, rec: IngestRecord) -> tuple[IngestRecord, StateHasher, bytes]:
        """What an adopted ingest verifiably holds: its parts (matched against ListParts,
        their hash state restored) and its tail (read back). Whatever fails to match is
        dropped and the ingest starts over from there."""
        hasher = StateHasher(rec.algorithm)
        up = rec.upload
        if up is not None:
            try:
                held = self.bucket.list_parts(up.key, up.id)
            except errdefs.NotFound:
                held = None
            # Complete names each part by its ETag (the MD5 the server computed), so a
            # vouched part still held is exactly the bytes the hash state covers.
            if held is not None and all(p in held.get(p.number, ()) for p in up.parts):
                if up.parts:
                    hasher = StateHasher.restore(rec.algorithm, bytes.fromhex(up.state))
            else:
                if held is not None:
                    self._drop_upload(rec)
                return rec.with_(upload=None, tail=0, offset=0), hasher, b""
        tail = b""
        if rec.tail:
            found = self.bucket.get_or_none(self.location.tail(rec.ref))
            if found is not None and len(found[0]) == rec.tail:
                tail = found[0]
            else:
                rec = rec.with_(tail=0)
        if not tail:
            # A writer killed after its record let go of the tail may have left it.
            self.bucket.delete(self.location.tail(rec.ref))
        return rec.with_(offset=rec.persisted), hasher, tail

    def used(self) -> int:
        """The bytes blobs and ingests hold in the bucket now: the blob objects, the
        staging objects and tails (listings), and each ingest's uploaded parts (its
        record)."""
        loc = self.location
        total = sum(o.size for o in self.bucket.list_objects(loc.blobs))
        total += sum(o.size for o in self.bucket.list_objects(loc.key("staging") + "/"))
        for obj in self.bucket.list_objects(loc.ingests):
            if obj.key.endswith(".tail"):
                total += obj.size
            elif obj.key.endswith(".json"):
                found = self.bucket.get_or_none(obj.key)
                rec = record_from_bytes(found[0]) if found is not None else None
                if rec is not None and rec.upload is not None:
                    total += rec.upload.size
        return total

    def _budget_check(self, ref: str, rec: IngestRecord) -> int | None:
        """The bytes this ingest may reach under the budget (None: no cap).
        ResourceExhausted when its known total does not fit."""
        cap = self.budget.max_bytes
        if cap is None:
            return None
        others = self.used() - rec.persisted
        need = rec.total - rec.persisted
        if rec.total > 0 and others + rec.total > cap and self.on_pressure is not None:
            self.on_pressure()
            others = self.used() - rec.persisted
        if rec.total > 0 and others + rec.total > cap:
            used = others + rec.persisted
            raise errdefs.ResourceExhausted(
                f"ingest {ref}: store budget of {cap} bytes ({human(cap)}, INGESTQ_MAX_BYTES) "
                f"has {used} bytes ({human(used)}) in use, {need} more needed"
            )
        return max(cap - others, 0)

    def exists(self, digest: Digest | str) -> bool:
        """Whether ``digest`` is committed (InvalidArgument for a malformed digest)."""
        return self.bucket.head(self.location.blob(Digest.parse(digest))) is not None

    # Provider --------------------------------------------------------------------------
    def reader_at(self, desc: Descriptor | Digest | str) -> S3ReaderAt:
        """A reader for the blob; NotFound if it is not committed."""
        digest = desc.digest if isinstance(desc, Descriptor) else Digest.parse(desc)
        key = self.location.blob(digest)
        head = self.bucket.head(key)
        if head is None:
            raise errdefs.NotFound(f"content {digest}")
        return S3ReaderAt(self.bucket, key, head.size, digest)

    # Ingester --------------------------------------------------------------------------
    def writer(self, ref: str, expected: Descriptor | None = None, *, total: int = 0) -> S3Writer:
        """Lock ``ref`` and open its ingest, continuing with what it verifiably holds; its
        total is ``expected.size`` or ``total`` (see :meth:`store.protocols.Ingester.writer`).

        InvalidArgument for a bad ref or total; AlreadyExists when ``expected.digest`` is
        committed; Unavailable when the ref is locked; FailedPrecondition when the known
        total differs from the ingest's; ResourceExhausted when it does not fit in the
        budget (nothing is written).
        """
        validate_ref(ref)
        total = writer_total(ref, expected, total)
        digest = Digest.parse(expected.digest) if expected is not None else None
        if digest is not None and self.exists(digest):
            raise errdefs.AlreadyExists(f"content {digest}")
        lease = self.locker.try_lock(ref, new_holder_id())
        try:
            with self._ingests_mutex:
                self._opened.add(self.location.ingest(ref))
            now = utcnow()
            algorithm = digest.algorithm if digest is not None else CANONICAL
            fresh = IngestRecord(ref, algorithm, now, now, total, digest)
            # Without a budget to check first, a new ingest's record is created with one
            # conditional PUT; only when one exists is it read (and resumed). The first
            # writer reads first: some servers (SeaweedFS) create a missing bucket on PUT.
            created = self.conditional_writes and self.budget.max_bytes is None
            created = created and self._bucket_seen
            if created:
                try:
                    self.bucket.put(
                        self.location.ingest(ref), record_to_bytes(fresh), if_none_match=True
                    )
                except errdefs.AlreadyExists:
                    created = False
            rec = fresh if created else self._record(ref)
            self._bucket_seen = True
            tail = b""
            quick = False
            if rec is None or created:
                rec = fresh
                hasher = StateHasher(algorithm)
                quick = self.conditional_writes and digest is not None
                quick = quick and 0 < total < self.part_size
            else:
                check_resume_total(ref, total, rec.total)
                rec, hasher, tail = self._recover(rec)
                rec = rec.with_(total=rec.total or total, expected=digest or rec.expected)
            limit = self._budget_check(ref, rec)
            writer = S3Writer(self, rec, lease, hasher, tail)
            writer._limit = limit
            writer._quick = quick
            if not created:
                writer._save()
            return writer
        except BaseException:
            lease.release()
            raise

    # Putter ------------------------------------------------------------------------------
    #: Each existence check is a request, as costly as the conditional PUT that answers
    #: AlreadyExists by itself: write_blob puts without asking first.
    check_before_put = False

    @property
    def small_blob_max(self) -> int:
        """The largest content :meth:`put` commits with one PUT (below the part size)."""
        return self.part_size - 1

    def put(
        self,
        ref: str,
        desc: Descriptor,
        data: bytes | bytearray | memoryview,
        labels: Mapping[str, str] | None = None,
    ) -> Info:
        """Commit ``data`` as ``desc`` in one call (see :meth:`store.protocols.Putter.put`).

        Content of at most :attr:`small_blob_max` bytes whose ``ref`` has no ingest
        record (see :meth:`_may_have_ingest`: no request per call) is one conditional
        PUT of the blob (``If-None-Match: *``; a 412 is AlreadyExists) carrying its
        times as user metadata, plus a metadata object only for labels; no HEAD, no
        ref lock (as the local store; the ingest core holds it). On a server without
        conditional writes (``conditional_writes=False``) a HEAD comes first; two
        racing writers may then both write the same bytes under the same
        content-addressed key, which is harmless. Anything else goes through
        :meth:`writer` (resuming that ingest, then dropping it). InvalidArgument,
        FailedPrecondition, AlreadyExists, Unavailable and ResourceExhausted as there."""
        validate_ref(ref)
        digest = Digest.parse(desc.digest)
        new_labels = {k: v for k, v in (labels or {}).items() if v != ""}
        validate_labels(new_labels)
        content = bytes(data)
        check_commit_size(ref, len(content), desc.size)
        check_commit_digest(Digest.from_bytes(content, digest.algorithm), digest)
        if len(content) <= self.small_blob_max and not self._may_have_ingest(ref):
            return self._put_new(ref, digest, content, new_labels)
        return put_through_writer(self, ref, desc, content, new_labels)

    def _put_new(self, ref: str, digest: Digest, content: bytes, labels: Mapping[str, str]) -> Info:
        cap = self.budget.max_bytes
        if cap is not None:
            used = self.used()
            if used + len(content) > cap and self.on_pressure is not None:
                self.on_pressure()
                used = self.used()
            if used + len(content) > cap:
                raise errdefs.ResourceExhausted(
                    f"ingest {ref}: store budget of {cap} bytes ({human(cap)}, "
                    f"INGESTQ_MAX_BYTES) has {used} bytes ({human(used)}) in use, "
                    f"{len(content)} more needed"
                )
        if not self.conditional_writes and self.exists(digest):
            raise errdefs.AlreadyExists(f"content {digest}")
        with blob_lock(self.locker, digest) if labels else contextlib.nullcontext():
            now = utcnow()
            try:
                self.bucket.put(
                    self.location.blob(digest),
                    content,
                    if_none_match=True,
                    metadata=_times_metadata(now),
                )
            except errdefs.AlreadyExists:
                raise errdefs.AlreadyExists(f"content {digest}") from None
            if labels:
                meta = meta_to_bytes(BlobMeta(now, now, labels), len(content))
                self.bucket.put(self.location.meta(digest), meta)
        return Info(digest, len(content), now, now, labels)

    def _publish(
        self,
        rec: IngestRecord,
        tail: bytes,
        digest: Digest,
        labels: Mapping[str, str],
        *,
        quick: bool = False,
    ) -> Info:
        """Publish the verified content and drop the ingest, holding the blob lock when
        there are labels. ``quick`` (an ingest with no upload): the blob's PUT carries
        its times, and a metadata object is written only for labels."""
        with blob_lock(self.locker, digest) if labels else contextlib.nullcontext():
            return self._publish_now(rec, tail, digest, labels, quick=quick)

    def _publish_now(
        self,
        rec: IngestRecord,
        tail: bytes,
        digest: Digest,
        labels: Mapping[str, str],
        *,
        quick: bool,
    ) -> Info:
        key = self.location.blob(digest)
        now = utcnow()
        try:
            if not self.conditional_writes and self.exists(digest):
                raise errdefs.AlreadyExists(f"content {digest}")
            up = rec.upload
            if up is not None and not up.parts:
                # Its first part never made it: the content is all in the buffer.
                self._drop_upload(rec)
                up = None
            if up is None:
                times = _times_metadata(now) if quick else {}
                self.bucket.put(key, tail, if_none_match=True, metadata=times)
            else:
                if up.key.startswith(self.location.blobs) and up.key != key:
                    raise errdefs.FailedPrecondition(
                        f"ingest {rec.ref} was started for {up.key}, its content is {digest}"
                    )
                parts = up.parts
                if tail:
                    number = len(parts) + 1
                    etag = self.bucket.upload_part(up.key, up.id, number, tail)
                    parts = (*parts, Part(number, len(tail), etag))
                direct = up.key == key
                self.bucket.complete_upload(up.key, up.id, parts, if_none_match=direct)
                if not direct:
                    try:
                        self.bucket.copy_new(up.key, key, up.size + len(tail))
                    finally:
                        self.bucket.delete(up.key)
        except errdefs.AlreadyExists:
            self._drop_ingest(rec)
            raise errdefs.AlreadyExists(f"content {digest}") from None
        size = rec.persisted - rec.tail + len(tail)
        if labels or not quick:
            meta = meta_to_bytes(BlobMeta(now, now, labels), size)
            self.bucket.put(self.location.meta(digest), meta)
        if rec.tail:
            self.bucket.delete(self.location.tail(rec.ref))
        self._drop_record(rec.ref)
        return Info(digest, size, now, now, labels)

    # IngestManager ---------------------------------------------------------------------
    def status(self, ref: str) -> Status:
        """The Status of ``ref``'s ingest: the writer's live offset while the ref is
        held, what survives a crash otherwise. NotFound if there is none."""
        validate_ref(ref)
        rec = self._record(ref)
        if rec is None:
            raise errdefs.NotFound(f"reference {ref}")
        return rec.status(self.locker.holder(ref))

    def list_statuses(self, *filters: str) -> list[Status]:
        """Every ingest whose ref matches any filter (field ``ref``), sorted by ref.
        InvalidArgument for a malformed filter."""
        flt = parse(*filters)
        found: list[Status] = []
        for obj in self.bucket.list_objects(self.location.ingests):
            if not obj.key.endswith(".json"):
                continue
            data = self.bucket.get_or_none(obj.key)
            if data is None:
                continue  # committed or aborted meanwhile
            rec = record_from_bytes(data[0])
            if flt.match(status_fields(rec.ref)):
                found.append(rec.status(self.locker.holder(rec.ref)))
        return sorted(found, key=lambda s: s.ref)

    def abort(self, ref: str) -> None:
        """Abort ``ref``'s multipart upload and drop the ingest. NotFound if there is
        none, Unavailable while a writer holds it."""
        validate_ref(ref)
        if self._record(ref) is None:
            raise errdefs.NotFound(f"reference {ref}")
        lease = self.locker.try_lock(ref, new_holder_id())
        try:
            rec = self._record(ref)
            if rec is None:
                raise errdefs.NotFound(f"reference {ref}")
            self._drop_ingest(rec)
        finally:
            lease.release()

    # Manager ---------------------------------------------------------------------------
    def _meta(self, digest: Digest) -> tuple[BlobMeta, int, str | None]:
        """A blob's metadata, size and the metadata object's ETag (None when the blob
        has no metadata object). NotFound when the blob is not committed."""
        found = self.bucket.get_or_none(self.location.meta(digest))
        if found is not None:
            meta, size = meta_from_bytes(found[0])
            return meta, size, found[1]
        head = self.bucket.head(self.location.blob(digest))
        if head is None:
            raise errdefs.NotFound(f"content {digest}")
        created, updated = _times_of(head.metadata, head.modified)
        return BlobMeta(created, updated), head.size, None

    def info(self, digest: Digest | str) -> Info:
        """The blob's Info; NotFound if it is not committed."""
        d = Digest.parse(digest)
        meta, size, _ = self._meta(d)
        return Info(d, size, meta.created_at, meta.updated_at, meta.labels)

    def update(self, info: Info, *fieldpaths: str) -> Info:
        """Change labels along ``fieldpaths`` (``labels``, ``labels.<key>``; none
        replaces all) with a conditional write of the metadata object, so concurrent
        updates are never lost. InvalidArgument for another path or an oversize label,
        NotFound for a missing blob, Unavailable when updates keep colliding."""
        d = Digest.parse(info.digest)
        for attempt in range(UPDATE_ATTEMPTS):
            meta, size, etag = self._meta(d)
            labels = apply_update(meta.labels, info.labels, tuple(fieldpaths), str(d))
            new = BlobMeta(meta.created_at, max(utcnow(), meta.updated_at), labels)
            try:
                self.bucket.put(
                    self.location.meta(d),
                    meta_to_bytes(new, size),
                    if_none_match=etag is None,
                    if_match=etag,
                )
            except (errdefs.FailedPrecondition, errdefs.AlreadyExists):
                # Someone else changed it meanwhile: read again, after a jittered pause.
                time.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))
                continue
            if not self.exists(d):  # deleted meanwhile: leave no orphan metadata
                self.bucket.delete(self.location.meta(d))
                raise errdefs.NotFound(f"content {d}")
            return Info(d, size, new.created_at, new.updated_at, labels)
        raise errdefs.Unavailable(f"update of {d}: too many concurrent updates")

    def walk(self, *filters: str) -> Iterator[Info]:
        """Every committed blob matching any filter (fields ``digest``, ``labels.<key>``),
        in key order. Filters are parsed before this returns (InvalidArgument)."""
        flt = parse(*filters)

        def infos() -> Iterator[Info]:
            for obj in self.bucket.list_objects(self.location.blobs):
                d = self.location.digest_of_blob_key(obj.key)
                if d is None:
                    continue
                with contextlib.suppress(errdefs.NotFound):
                    info = self.info(d)
                    if flt.match(info_fields(info)):
                        yield info

        return infos()

    def delete(self, digest: Digest | str) -> None:
        """Remove a blob and its metadata; NotFound if it is not committed."""
        d = Digest.parse(digest)
        if not self.exists(d):
            raise errdefs.NotFound(f"content digest {d}")
        self.bucket.delete(self.location.meta(d))
        self.bucket.delete(self.location.blob(d))

    def image_index(self) -> S3ImageIndex:
        """The image records, in the bucket's ``<prefix>/index.json`` (conditional
        writes: see :mod:`ingestq.s3.images`)."""
        return S3ImageIndex(self.bucket, self.location)

    def leases(self) -> S3LeaseStore:
        """The leases, one object each under ``<prefix>/leases/`` (conditional writes:
        see :mod:`ingestq.s3.leases`); their content adds pass through this store's
        blob locks."""
        return S3LeaseStore(self.bucket, self.location, self.locker)

    def multipart_uploads(self) -> list[tuple[str, str]]:
        """``(key, upload id)`` of every multipart upload in progress under the prefix."""
        return self.bucket.uploads(self.location.key(""))


__all__ = ["DEFAULT_PART_SIZE", "MIN_PART_SIZE", "S3ReaderAt", "S3Store", "S3Writer"]
