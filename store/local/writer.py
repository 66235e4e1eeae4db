"""The local store's Writer: one owned data file, hashed as it is written.

Large writes hash in a helper thread while the calling thread does the ``write`` system
call (both release the GIL), so hashing costs little wall-clock time on top of the I/O,
as long as the writer is the only one open in the process (a worker's ingest, ``ingestq
ingest``). With several open at once (an embedded pull's children) each hashes in its
own thread: those threads already keep the cores busy, and every hand-off to the helper
costs a wake-up and a wait for the GIL (measured: ~6% less CPU and ~15% less time for a
pull of 8 x 64 MiB). A piece of immutable ``bytes`` (a gRPC message, an in-memory blob)
is hashed *behind* the write instead (:class:`~ingestq.store.local.hashqueue.HashQueue`):
queued in order, so the next write starts at once and hashing runs back to back; the
digest, a truncate, a commit or a kernel copy wait for the queue first. A mutable buffer
is hashed before ``write`` returns, since its caller may reuse it.
When the store syncs at commit, the kernel's writeback of the file is started every
:data:`WRITEBACK_STEP` bytes (``sync_file_range``, Linux), so the disk works while the
next chunks arrive and the commit's fsync only waits for the tail. The step before is
then dropped from the page cache (``POSIX_FADV_DONTNEED``, which skips pages not yet
written back), and the whole file once it is durable: a blob is written once and read
later if at all, and on the project's virtual machines a page cache that grows with
every ingest cost fresh memory from the host (a 512 MiB gRPC ingest ran at 133-168
MiB/s keeping its pages and 226-251 MiB/s dropping them). ``keep_cache`` keeps them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Self

from ingestq import errdefs
from ingestq.store.budget import BudgetMeter
from ingestq.store.digest import Digest, Hasher, new_hasher
from ingestq.store.fdcopy import Method, copy_saves_work, kernel_copy
from ingestq.store.hashfeed import THROUGH_PIECE, feed
from ingestq.store.labels import validate as validate_labels
from ingestq.store.libc import check, linux_function
from ingestq.store.local.blobs import Publisher, hash_fd
from ingestq.store.local.hashqueue import HashFailed, HashQueue
from ingestq.store.local.ingest import IngestDir
from ingestq.store.locks import Lease
from ingestq.store.oserrors import from_os_error
from ingestq.store.ownfiles import open_adoptable
from ingestq.store.rules import check_commit_digest, check_commit_size
from ingestq.store.values import Info, Status, utcnow

#: Writes at least this large hash in a helper thread, overlapped with the write call
#: (while the writer is the only one open in the process).
PARALLEL_HASH_MIN = 128 * 1024
#: Bytes :meth:`LocalWriter.copy_from` copies in one kernel call; the previous piece is
#: hashed (read back from the page cache) while the next one is copied.
COPY_PIECE = 4 << 20
#: Bytes of each buffer :meth:`LocalWriter.copy_from` reads a file through where it does
#: not copy in the kernel, and how many such buffers it fills ahead of the hashing.
READ_PIECE = 512 << 10
READ_RING = 4
#: The most bytes one ``write`` system call of :meth:`LocalWriter.copy_from` passes. On
#: the project's virtual machines a file written in 1 MiB calls often took 3x as long
#: (most of it system time: the kernel finding memory for large page-cache folios)
#: as one written in 256 KiB calls, which never did.
WRITE_PIECE = 256 << 10
#: Bytes written between two starts of the kernel's writeback (when the store fsyncs).
WRITEBACK_STEP = 8 << 20
#: Bytes before the newest writeback that each step asks the kernel to drop from the
#: page cache again (pages still under writeback were skipped the time before).
DROP_WINDOW = 4 * WRITEBACK_STEP

_SYNC_FILE_RANGE_WRITE = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _sync_file_range() -> Callable[[int, int, int], None] | None:
    """``sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)`` from libc (it
    starts writeback without waiting for it), or None where there is none."""
    fn = linux_function("sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                            ctypes.c_uint])  # fmt: skip
    if fn is None:
        return None

    def start(fd: int, offset: int, nbytes: int) -> None:
        check(fn(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE))

    return start


start_writeback = _sync_file_range()

#: ``1`` keeps a durable ingest's bytes in the page cache (see :func:`keep_cache`).
KEEP_CACHE_ENV = "INGESTQ_KEEP_CACHE"


def keep_cache(env: Mapping[str, str] = os.environ) -> bool:
    """Whether ``INGESTQ_KEEP_CACHE`` asks writers to leave what they wrote in the page
    cache (``1``, ``true``, ``yes``); by default a durable ingest's bytes are dropped
    from it once on disk."""
    return env.get(KEEP_CACHE_ENV, "").strip().lower() in ("1", "true", "yes")


_pool: ThreadPoolExecutor | None = None
_pool_mutex = threading.Lock()
#: Writers open in this process (under ``_pool_mutex``): hashing is handed to the pool
#: only while there is one.
_open_writers = 0


def _writer_opened() -> None:
    global _open_writers
    with _pool_mutex:
        _open_writers += 1


def _writer_closed() -> None:
    global _open_writers
    with _pool_mutex:
        _open_writers = max(_open_writers - 1, 0)


def _hash_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_mutex:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=max(os.cpu_count() or 2, 2), thread_name_prefix="store-hash"
            )
        return _pool


def _forget_pool_after_fork() -> None:
    # A forked child has none of the parent's threads; it must build its own pool.
    global _pool, _pool_mutex, _open_writers
    _pool = None
    _pool_mutex = threading.Lock()
    _open_writers = 0


os.register_at_fork(after_in_child=_forget_pool_after_fork)


class LocalWriter:
    """A write into ``ingest/<H>/data.<id>``, created by :meth:`LocalStore.writer`.

    Holds the ref's lock until :meth:`commit` or :meth:`close`, and hands the finished
    file to ``publisher`` at commit. ``fsync`` makes commit and close durable; with it,
    the bytes leave the page cache once on disk (what is written back at each step,
    and the whole file when commit or close has synced it, if it is 8 MiB or more),
    unless ``keep_cache``. ``meter``
    (the store's disk budget) is asked before every write. ``updated_at`` is the time of
    the ingest's last write (now for a new one). ``held_fd`` is the ingest directory
    held open (:meth:`IngestDir.held`), closed with the writer. Not safe for use by
    several threads at once.
    """

    def __init__(
        self,
        publisher: Publisher,
        ref: str,
        ingest: IngestDir,
        lease: Lease,
        data_id: str,
        fd: int,
        hasher: Hasher,
        algorithm: str,
        offset: int,
        total: int,
        expected: Digest | None,
        started_at: datetime,
        *,
        fsync: bool,
        meter: BudgetMeter | None = None,
        updated_at: datetime | None = None,
        keep_cache: bool = False,
        held_fd: int | None = None,
    ) -> None:
        self._publisher = publisher
        self._fsync = fsync
        self._ref = ref
        self._ingest = ingest
        self._lease = lease
        self._id = data_id
        self._fd: int | None = fd
        _writer_opened()  # counted until _finish takes the descriptor
        self._hasher = hasher
        self._algorithm = algorithm
        self._offset = offset
        self._total = total
        self._expected = expected
        self._started_at = started_at
        self._updated_at = updated_at or utcnow()
        self._meter = meter
        self._charged = offset
        self._writeback = start_writeback if fsync else None
        # A resumed ingest's prefix (adopted or copied) is written back with the first
        # step, so that it can leave the page cache too.
        self._written_back = 0
        # Written once and read later, if at all: a durable ingest's bytes leave the
        # page cache once on disk (see _start_writeback), unless ``keep_cache``.
        self._keep_cache = keep_cache or not fsync or not hasattr(os, "posix_fadvise")
        self._durable = False  # fsynced by commit or close (no write can follow)
        # copy_from's way: None chooses by the files at each call (see copy_from);
        # "none" once a kernel copy failed for this writer's files.
        self._copy_method: Method | None = None
        self._ring_buffers: list[memoryview] | None = None  # see _ring
        self._through_buffer: bytearray | None = None  # see _through
        self._hashed = offset  # copy_from: the end of the bytes the hasher has seen
        # write(): pieces of immutable bytes hashed behind the writes (see _write).
        self._behind = HashQueue(_hash_pool)
        # Last: until here the caller still owns (and closes) the held directory.
        self._held_fd = held_fd

    @property
    def ref(self) -> str:
        """The ref this writer holds."""
        return self._ref

    @property
    def lease(self) -> Lease:
        """The lock this writer holds (for heartbeats and fencing checks)."""
        return self._lease

    @property
    def data_path(self) -> Path:
        """The name of the data file this writer owns (while it is open), in the store:
        for other processes. The writer itself reaches it through its held directory."""
        return IngestDir(self._ingest.path).data_path(self._id)

    @property
    def _own_data(self) -> Path:
        return self._ingest.data_path(self._id)

    def _open_fd(self) -> int:
        if self._fd is None:
            raise errdefs.FailedPrecondition(f"writer for {self._ref} is closed")
        return self._fd

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; returns ``len(data)``.

        ResourceExhausted when the store's budget has no room for all of ``data`` (the
        part that fits is written first, so the ingest stops exactly at the limit), when
        the disk is full or the file too large; PermissionDenied, or another kind from
        the OS error. The bytes that reached the file count (the offset and digest cover
        exactly them), so the ingest stays resumable. FailedPrecondition when the writer
        is closed or its lease was lost.
        """
        fd = self._open_fd()
        self._lease.check()
        view = memoryview(data).cast("B")
        refused = ""
        if self._meter is not None:
            room, refused = self._meter.room(len(view))
            if refused:
                view = view[:room]
        try:
            self._write(fd, view)
        finally:
            if self._meter is not None:
                self._meter.charge(self._offset - self._charged)
                self._charged = self._offset
        if refused:
            raise errdefs.ResourceExhausted(
                f"write {self._ref} at offset {self._offset} (kept for a resume): {refused}"
            )
        return len(view)

    def _write(self, fd: int, view: memoryview) -> None:
        size = len(view)
        pos = 0
        parallel = size >= PARALLEL_HASH_MIN and _open_writers == 1
        # Immutable bytes are hashed behind the write, in order, while the caller goes
        # on (the next write does not wait for this piece's hash); a mutable buffer is
        # hashed before write returns, since its caller may reuse it at once.
        behind = parallel and isinstance(view.obj, bytes)
        pending: Future[None] | None = None
        before: Hasher | None = None
        if not behind:
            self._settle()
            if parallel:
                before = self._hasher.copy()
                pending = _hash_pool().submit(feed, self._hasher, view,
                                              self._through())  # fmt: skip
        try:
            while pos < size:
                pos += os.write(fd, view[pos:])
        except OSError as e:
            raise from_os_error(e, f"write {self._ref} at offset {self._offset + pos}") from e
        finally:
            if pos < size:
                pos = self._reached(fd, pos, size)
            if behind:
                if pos:
                    self._queue(view[:pos])
            elif pending is not None and before is not None:
                pending.result()
                if pos != size:  # the helper hashed bytes that never reached the file
                    before.update(view[:pos])
                    self._hasher = before
            else:
                self._hasher.update(view[:pos])
            self._offset += pos
            self._updated_at = utcnow()
        self._start_writeback(fd)

    def _through(self) -> bytearray:
        """The buffer this writer's helper hashes through (made on first use; used by
        one helper at a time: each waits for the one before)."""
        if self._through_buffer is None:
            self._through_buffer = bytearray(THROUGH_PIECE)
        return self._through_buffer

    def _queue(self, piece: memoryview, *, straight: bool = False) -> None:
        """Queue ``piece`` (just written) to be hashed behind the writes."""
        try:
            self._behind.put(self._hasher, piece, straight=straight)
        except HashFailed as e:
            self._hash_failed(e.error)
        except BaseException:
            # Interrupted before the piece was queued: the digest misses bytes the file
            # holds, so the writer closes (a resume hashes the file again) and the
            # interrupt goes on.
            self._finish(sync=False, stamp=True)
            raise

    def _settle(self) -> None:
        """Wait until every piece hashed behind the writes is in the digest."""
        try:
            self._behind.wait()
        except HashFailed as e:
            self._hash_failed(e.error)

    def _hash_failed(self, error: BaseException) -> None:
        """Hashing behind the writes failed: the digest no longer covers the file, so
        the writer is closed (the ingest is kept: a resume hashes the file again)."""
        self._finish(sync=False, stamp=True)
        raise errdefs.Unknown(
            f"ingest {self._ref}: hashing failed ({error!r}); the writer is closed and the "
            "ingest kept for a resume"
        ) from error

    def copy_from(self, fd: int, offset: int, length: int, *, method: Method | None = None) -> int:
        """Append up to ``length`` bytes of the file ``fd`` from ``offset`` (``fd``'s
        own position is not used); returns the number appended, fewer than ``length``
        only when the file ends first (0 at its end).

        Where a kernel copy is cheaper than copying (both files on one filesystem that
        shares extents or copies on its server: :func:`ingestq.store.fdcopy.copy_saves_work`),
        the kernel copies (``copy_file_range`` or ``sendfile``) while a helper
        thread hashes the previous piece read back from the data file. Elsewhere (and
        where no kernel copy works for these files) it reads into a ring of buffers and
        writes them, each hashed behind the writes straight from its buffer. Either
        way the digest covers exactly the bytes the file holds even if the source
        changes meanwhile. Errors, budget and resumability as :meth:`write`.
        ``method`` forces a way (``"none"``: read and write).
        """
        dst = self._open_fd()
        self._lease.check()
        if length <= 0:
            return 0
        self._settle()
        refused = ""
        if self._meter is not None:
            room, refused = self._meter.room(length)
            if refused:
                length = room
        start = self._offset
        try:
            self._copy(fd, dst, offset, length, method or self._chosen_method(fd, dst))
        finally:
            if self._meter is not None:
                self._meter.charge(self._offset - self._charged)
                self._charged = self._offset
        copied = self._offset - start
        if refused and copied == length and self._pread(fd, offset + copied, 1):
            raise errdefs.ResourceExhausted(
                f"write {self._ref} at offset {self._offset} (kept for a resume): {refused}"
            )
        return copied

    def _chosen_method(self, src: int, dst: int) -> Method:
        if self._copy_method is not None:
            return self._copy_method
        try:
            return "auto" if copy_saves_work(src, dst) else "none"
        except OSError as e:
            raise from_os_error(e, f"stat the source of {self._ref}") from e

    def _copy(self, src: int, dst: int, offset: int, length: int, method: Method) -> None:
        if method == "none":
            self._read_through(src, dst, offset, length)
            return
        copied = 0
        pending: Future[None] | None = None
        self._hashed = self._offset  # copy_from settled first: every earlier byte is hashed
        fallback = False
        try:
            while copied < length:
                want = min(COPY_PIECE, length - copied)
                at = self._offset
                try:
                    n = kernel_copy(src, dst, offset + copied, want, method)
                except OSError as e:
                    raise from_os_error(e, f"write {self._ref} at offset {at}") from e
                if n is None:  # no kernel copy for these files: read and write instead
                    self._copy_method = "none"
                    fallback = True
                    break
                if n == 0:
                    break
                # The bytes are in the file: they count even if hashing them fails.
                self._offset += n
                copied += n
                if pending is not None:
                    pending.result()
                pending = _hash_pool().submit(self._hash_back, dst, at, n)
                self._start_writeback(dst)
        finally:
            self._updated_at = utcnow()
            self._settle_copies(dst, pending)
        if fallback:
            self._read_through(src, dst, offset + copied, length - copied)

    def _settle_copies(self, fd: int, pending: Future[None] | None) -> None:
        """After the kernel copies: wait for the last piece's hash (an interrupt does
        not cut that wait short, the helper still reads the file), then keep only the
        bytes the digest covers: a piece copied but never handed to the helper (an
        interrupt came first) is cut off again. The interrupt is raised after."""
        interrupted: BaseException | None = None
        if pending is not None:
            while True:
                try:
                    futures_wait([pending])
                    break
                except BaseException as e:  # KeyboardInterrupt and the like: raised below
                    interrupted = e
            error = pending.exception()
            if error is not None:
                self._unhashed_tail(fd, error)
        try:
            at = os.lseek(fd, 0, os.SEEK_CUR)
        except OSError:
            at = self._offset
        # An interrupt may also land after a copy call returned, before its count was
        # added up: then the file runs past the offset.
        if self._hashed < self._offset or at != self._offset:
            self._cut_to_hashed(fd, "an interrupt")
        if interrupted is not None:
            raise interrupted

    def _read_through(self, src: int, dst: int, offset: int, length: int) -> None:
        """Copy by ``pread`` into this writer's ring of buffers and ``write``; each
        piece is hashed behind the writes, straight from its buffer, which is refilled
        only once that piece is hashed."""
        ring = self._ring()
        parallel = _open_writers == 1
        copied = 0
        slot = 0
        while copied < length:
            if parallel:
                try:
                    self._behind.wait_below(len(ring))  # this slot's last piece is hashed
                except HashFailed as e:
                    self._hash_failed(e.error)
            else:
                self._settle()
            view = ring[slot][: min(READ_PIECE, length - copied)]
            try:
                got = os.preadv(src, [view], offset + copied)
            except OSError as e:
                raise from_os_error(
                    e, f"read the source of {self._ref} at offset {offset + copied}"
                ) from e
            if got == 0:
                break
            self._write_ring_piece(dst, view[:got], parallel)
            copied += got
            slot = (slot + 1) % len(ring)

    def _write_ring_piece(self, fd: int, view: memoryview, parallel: bool) -> None:
        pos = 0
        try:
            while pos < len(view):
                pos += os.write(fd, view[pos : pos + WRITE_PIECE])
        except OSError as e:
            raise from_os_error(e, f"write {self._ref} at offset {self._offset + pos}") from e
        finally:
            if pos < len(view):
                pos = self._reached(fd, pos, len(view))
            # Counted first: the bytes are in the file whether or not hashing them works.
            self._offset += pos
            self._updated_at = utcnow()
            if pos:
                if parallel:
                    self._queue(view[:pos], straight=True)
                else:
                    self._hash_inline(view[:pos])
        self._start_writeback(fd)

    def _hash_inline(self, piece: memoryview) -> None:
        try:
            self._hasher.update(piece)
        except BaseException:
            self._finish(sync=False, stamp=True)  # the digest misses bytes the file holds
            raise

    def _reached(self, fd: int, counted: int, size: int) -> int:
        """The bytes of a write of ``size`` that reached the file when it stopped early:
        an interrupt can land after a ``write`` call returned and before its count was
        added up (``counted``), so the file's position says."""
        try:
            return min(max(os.lseek(fd, 0, os.SEEK_CUR) - self._offset, counted), size)
        except OSError:
            return counted

    def _ring(self) -> list[memoryview]:
        """The buffers :meth:`_read_through` reads into (made on first use)."""
        if self._ring_buffers is None:
            self._ring_buffers = [memoryview(bytearray(READ_PIECE)) for _ in range(READ_RING)]
        return self._ring_buffers

    def _unhashed_tail(self, fd: int, error: BaseException) -> None:
        """Hashing the copied bytes failed: cut the file back to the bytes the digest
        covers (so the ingest stays resumable and never commits an unhashed byte)."""
        self._cut_to_hashed(fd, repr(error))
        if isinstance(error, OSError):
            raise from_os_error(error, f"hash {self._ref}") from error
        raise error

    def _cut_to_hashed(self, fd: int, why: str) -> None:
        """Cut the data file back to the bytes the digest covers (copied bytes ``why``
        left unhashed); DataLoss, the writer closed, when the file cannot be cut."""
        try:
            os.ftruncate(fd, self._hashed)
            os.lseek(fd, self._hashed, os.SEEK_SET)
        except OSError as e:
            self._finish(sync=False, stamp=False)  # its digest would not match its bytes
            raise errdefs.DataLoss(
                f"ingest {self._ref}: copied bytes left unhashed ({why}) could not be "
                "dropped; the writer is closed"
            ) from e
        self._offset = self._hashed
        self._written_back = min(self._written_back, self._hashed)

    def _pread(self, fd: int, offset: int, n: int) -> bytes:
        try:
            return os.pread(fd, n, offset)
        except OSError as e:
            raise from_os_error(e, f"read the source of {self._ref} at offset {offset}") from e

    def _hash_back(self, fd: int, offset: int, n: int) -> None:
        """Hash ``n`` bytes of the data file from ``offset`` (just written: page cache)."""
        buf = memoryview(self._through())  # small: it stays in the hashing core's cache
        done = 0
        while done < n:
            want = min(len(buf), n - done)
            got = os.preadv(fd, [buf[:want]], offset + done)
            if got <= 0:
                raise errdefs.DataLoss(
                    f"ingest {self._ref}: data file ended at {offset + done} while hashing"
                )
            self._hasher.update(buf[:got])
            done += got
            self._hashed = offset + done

    def _start_writeback(self, fd: int) -> None:
        if self._writeback is not None and self._offset - self._written_back >= WRITEBACK_STEP:
            begun = self._written_back
            try:
                self._writeback(fd, begun, self._offset - begun)
                self._written_back = self._offset
            except OSError:
                self._writeback = None  # only a hint: durability comes from commit's fsync
                return
            if not self._keep_cache and begun > 0:
                # Up to the range just started: all of it is hashed (a kernel copy's
                # read-back lags one piece at most). Pages under writeback are skipped,
                # so the last few steps are asked again each time.
                start = max(begun - DROP_WINDOW, 0)
                self._drop_range(fd, start, begun - start)

    def _drop_range(self, fd: int, offset: int, nbytes: int) -> None:
        """Ask the kernel to drop a range's pages (``POSIX_FADV_DONTNEED`` does not
        wait: pages still dirty or under writeback stay, for the final drop)."""
        try:
            os.posix_fadvise(fd, offset, nbytes, os.POSIX_FADV_DONTNEED)
        except OSError:
            self._keep_cache = True  # only a hint

    def _let_cache_go(self, fd: int) -> None:
        """Drop the whole file's pages once it is durable (a small one keeps them: they
        cost little and may be read again soon)."""
        if self._durable and not self._keep_cache and self._offset >= WRITEBACK_STEP:
            self._drop_range(fd, 0, 0)

    def digest(self) -> Digest:
        """The digest of every byte written so far (the empty digest for none)."""
        self._settle()
        return Digest(self._algorithm, self._hasher.hexdigest())

    def status(self) -> Status:
        """This write's Status, from memory."""
        return Status(
            ref=self._ref,
            offset=self._offset,
            total=self._total,
            started_at=self._started_at,
            updated_at=self._updated_at,
            expected=self._expected,
            holder=self._lease.holder,
        )

    def truncate(self, size: int) -> None:
        """Restart the ingest from zero. Only ``size == 0`` is supported (InvalidArgument
        otherwise); FailedPrecondition when closed."""
        if size != 0:
            raise errdefs.InvalidArgument(f"truncate {self._ref}: only size 0 is supported")
        fd = self._open_fd()
        self._lease.check()
        self._settle()
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        except OSError as e:
            raise from_os_error(e, f"truncate {self._ref}") from e
        self._hasher = new_hasher(self._algorithm)
        if self._meter is not None:
            self._meter.credit(self._offset)
        self._offset = 0
        self._charged = 0
        self._written_back = 0
        self._updated_at = utcnow()

    def commit(
        self, size: int = 0, expected: Digest | None = None, labels: Mapping[str, str] | None = None
    ) -> Info:
        """Check the size (if ``size > 0``) then the digest (if ``expected``), publish the
        blob atomically and durably, and return its Info.

        FailedPrecondition for a wrong size or digest, a closed writer, or an ingest
        aborted or taken over meanwhile; the ingest is kept for a retry. AlreadyExists
        when the blob is already committed (the ingest is discarded). InvalidArgument for
        bad labels. Always closes the writer and releases the lock.
        """
        try:
            return self._commit(size, Digest.parse(expected) if expected else None, labels)
        except errdefs.AlreadyExists:
            if self._meter is not None:
                self._meter.credit(self._offset)  # the ingest was dropped
            raise
        finally:
            self._finish(sync=False, stamp=False)

    def _commit(self, size: int, expected: Digest | None, labels: Mapping[str, str] | None) -> Info:
        fd = self._fd
        if fd is None:
            raise errdefs.FailedPrecondition("cannot commit on closed writer")
        new_labels = {k: v for k, v in (labels or {}).items() if v != ""}
        validate_labels(new_labels)
        try:
            if self._fsync:
                os.fsync(fd)
                self._durable = True
            actual_size = os.fstat(fd).st_size
        except OSError as e:
            raise from_os_error(e, f"sync {self._ref}") from e
        if actual_size != self._offset:
            raise errdefs.DataLoss(
                f"ingest {self._ref}: data file holds {actual_size} bytes, wrote {self._offset}"
            )
        check_commit_size(self._ref, self._offset, size)
        digest = self.digest()
        if expected is not None and expected.algorithm != self._algorithm:
            try:
                hasher, _ = hash_fd(fd, expected.algorithm, limit=self._offset)
            except OSError as e:
                raise from_os_error(e, f"hash {self._ref}") from e
            digest = Digest(expected.algorithm, hasher.hexdigest())
        check_commit_digest(digest, expected)
        self._lease.check()
        # Publishing is content-addressed: even a writer whose lease expired after the
        # check above can only publish bytes that hash to ``digest``. The descriptor
        # stays ours: _finish closes it (and seals the file if it was not published).
        return self._publisher.publish(
            self._ref, self._ingest, self._own_data, fd, digest, new_labels
        )

    def close(self) -> None:
        """Release the lock and keep the ingest (sealed) for a later resume or abort.
        Closing twice is fine."""
        self._finish(sync=self._fsync, stamp=True)

    def _finish(self, *, sync: bool, stamp: bool) -> None:
        fd, self._fd = self._fd, None
        try:
            if fd is not None:
                try:
                    # The file's time is the ingest's updated_at on disk and on resume:
                    # make it exactly this writer's (containerd writes ``updatedat``).
                    if stamp:
                        ns = (self._updated_at - _EPOCH) // timedelta(microseconds=1) * 1000
                        os.utime(fd, ns=(ns, ns))
                    if sync:
                        os.fsync(fd)
                        self._durable = True
                except OSError:
                    pass  # a resume rehashes whatever the file holds
                finally:
                    try:
                        self._let_cache_go(fd)
                    finally:
                        os.close(fd)
                # Sealed: this writer will never write the file again, so the next
                # writer may take it over in place instead of copying it.
                with contextlib.suppress(OSError):
                    os.rename(self._own_data, self._ingest.sealed_path(self._id))
        finally:
            if fd is not None:
                _writer_closed()
            held_fd, self._held_fd = getattr(self, "_held_fd", None), None
            try:
                if held_fd is not None:
                    os.close(held_fd)
            finally:
                self._lease.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            with contextlib.suppress(Exception):
                self.close()


def copy_prefix(src: Path | None, dst_fd: int, algorithm: str) -> tuple[Hasher, int]:
    """Copy ``src`` (an earlier writer's data) into ``dst_fd``, hashing exactly the bytes
    copied. Returns the hasher and the number of bytes adopted (0 if ``src`` is missing).
    Raises OSError (e.g. ENOSPC)."""
    hasher = new_hasher(algorithm)
    if src is None:
        return hasher, 0
    try:
        src_fd = open_adoptable(src, os.O_RDONLY)
    except FileNotFoundError:
        return hasher, 0
    if src_fd is None:  # planted: nothing of it is adopted, nor read
        return hasher, 0
    copied = 0
    try:
        while True:
            chunk = os.pread(src_fd, 1 << 20, copied)
            if not chunk:
                break
            view = memoryview(chunk)
            pos = 0
            while pos < len(view):
                pos += os.write(dst_fd, view[pos:])
            hasher.update(chunk)
            copied += len(chunk)
    finally:
        os.close(src_fd)
    return hasher, copied


__all__ = ["LocalWriter", "copy_prefix"]
