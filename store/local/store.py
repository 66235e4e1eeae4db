"""The local filesystem store, with containerd's semantics and error kinds.

Everything it keeps lives under its root as :mod:`ingestq.store.layout` describes (the
root is also an OCI image layout): committed blobs and their metadata
(:mod:`.blobs`), one directory per ingest (:mod:`.ingest`) and host-local lock files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ingestq import errdefs
from ingestq.store.budget import Budget, BudgetMeter
from ingestq.store.digest import CANONICAL, Digest, Hasher
from ingestq.store.filters import parse, status_fields
from ingestq.store.helpers import put_through_writer
from ingestq.store.images import ensure_layout
from ingestq.store.labels import validate as validate_labels
from ingestq.store.layout import RootLayout
from ingestq.store.leases import LeaseStore
from ingestq.store.local.blobs import Blobs, FileReaderAt, hash_fd
from ingestq.store.local.ingest import DataFile, IngestDir, new_data_id
from ingestq.store.local.small import small_blob_max as env_small_blob_max
from ingestq.store.local.writer import LocalWriter, copy_prefix
from ingestq.store.local.writer import keep_cache as env_keep_cache
from ingestq.store.lockfile import lock_wait
from ingestq.store.locks import ChainLocker, FileRefLocker, Lease, RefLocker, new_holder_id
from ingestq.store.oserrors import from_os_error
from ingestq.store.ownfiles import is_regular, open_adoptable, remove_tree
from ingestq.store.rules import (
    check_commit_digest,
    check_commit_size,
    check_resume_total,
    validate_ref,
    writer_total,
)
from ingestq.store.values import Descriptor, Info, Status, utcnow

_OPEN_ATTEMPTS = 5


class LocalStore:
    """A :class:`store.protocols.Store` on a local (or shared) filesystem.

    Writers take the host-local file lock of their ref, then each of ``lockers`` (e.g. a
    Redis lease for many hosts). :attr:`locker` is the combined lock and may be replaced
    (tests replace it to prove the store is correct without one). ``fsync=False`` skips
    durability syncs (for tests). ``budget`` caps what blobs, ingests and quarantined
    files hold and keeps a reserve free on the filesystem (see
    :mod:`ingestq.store.budget`; :attr:`meter` applies it, and its ``on_pressure`` hook
    may be set). ``small_blob_max`` is the
    largest content :meth:`put` commits without an ingest (default: ``INGESTQ_SMALL_BLOB``,
    else 1 MiB; 0 turns the small-blob path off). With ``fsync``, an ingest's bytes leave
    the page cache once they are on disk, unless ``keep_cache`` (default:
    ``INGESTQ_KEEP_CACHE``). Raises PermissionDenied /
    ResourceExhausted (or another kind) when the root cannot be created,
    FailedPrecondition when a file stands where one of its directories must be,
    InvalidArgument for a malformed ``INGESTQ_SMALL_BLOB`` or ``INGESTQ_LOCK_FILE_WAIT``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        lockers: Sequence[RefLocker] = (),
        *,
        fsync: bool = True,
        budget: Budget | None = None,
        small_blob_max: int | None = None,
        keep_cache: bool | None = None,
    ) -> None:
        self.small_blob_max = small_blob_max if small_blob_max is not None else env_small_blob_max()
        lock_wait()  # a malformed INGESTQ_LOCK_FILE_WAIT fails the store's opening, not a lock
        #: Whether writers leave what they wrote in the page cache (default: drop it
        #: once on disk, unless ``INGESTQ_KEEP_CACHE=1``).
        self.keep_cache = keep_cache if keep_cache is not None else env_keep_cache()
        #: Existence checks are cheap (a stat): write_blob asks before reading its source.
        self.check_before_put = True
        self.root = Path(root).absolute()
        self.layout = RootLayout(self.root)
        self.blobs = Blobs(self.layout, fsync=fsync)
        self.meter = BudgetMeter(self.layout, budget or Budget())
        try:
            for sub in (self.layout.blobs, self.layout.ingest, self.layout.locks, self.layout.meta):
                sub.mkdir(parents=True, exist_ok=True)
            ensure_layout(self.layout)
        except (NotADirectoryError, FileExistsError) as e:  # a file where a directory must be
            raise errdefs.FailedPrecondition(
                f"open store {self.root}: {e.strerror}: {e.filename}"
            ) from e
        except OSError as e:
            raise from_os_error(e, f"open store {self.root}") from e
        self.file_locker = FileRefLocker(self.layout.locks)
        self.locker: RefLocker = (
            ChainLocker([self.file_locker, *lockers]) if lockers else self.file_locker
        )
        self._leases: LeaseStore | None = None

    def leases(self) -> LeaseStore:
        """The root's leases (:class:`ingestq.store.leases.LeaseStore`, ``leases/`` under
        the root). PermissionDenied / ResourceExhausted when they cannot be created."""
        if self._leases is None:
            self._leases = LeaseStore(self.root)
        return self._leases

    @property
    def fsync(self) -> bool:
        """Whether commits and metadata writes are made durable."""
        return self.blobs.fsync

    # paths ---------------------------------------------------------------------------
    def blob_path(self, digest: Digest | str) -> Path:
        """Where a committed blob lives (InvalidArgument for a malformed digest)."""
        return self.layout.blob(Digest.parse(digest))

    def _ingest(self, ref: str) -> IngestDir:
        return IngestDir(self.layout.ingest_dir(ref))

    def exists(self, digest: Digest | str) -> bool:
        """Whether ``digest`` is committed: a regular file by its name, not a link to
        one (InvalidArgument for a malformed digest)."""
        return is_regular(self.blob_path(digest))

    # Provider --------------------------------------------------------------------------
    def reader_at(self, desc: Descriptor | Digest | str) -> FileReaderAt:
        """A reader for the blob; NotFound if it is not committed."""
        digest = desc.digest if isinstance(desc, Descriptor) else Digest.parse(desc)
        return FileReaderAt(self.blob_path(digest), digest)

    # Ingester --------------------------------------------------------------------------
    def writer(
        self, ref: str, expected: Descriptor | None = None, *, total: int = 0
    ) -> LocalWriter:
        """Lock ``ref`` and open its ingest, resuming at the stored offset; its total is
        ``expected.size`` or ``total`` (see :meth:`store.protocols.Ingester.writer`).

        InvalidArgument for a bad ref or total; Unavailable when the ref is locked
        (``ref <ref> locked for <duration> (since <time>)``); AlreadyExists when
        ``expected.digest`` is committed; FailedPrecondition when the total differs
        from the one the ingest started with; ResourceExhausted when the rest of an
        ingest of known total does not fit in the budget (nothing is written or kept
        for a new ingest), PermissionDenied / ResourceExhausted when the ingest cannot
        be written.
        """
        validate_ref(ref)
        total = writer_total(ref, expected, total)
        digest = Digest.parse(expected.digest) if expected is not None else None
        if digest is not None and self.blobs.committed(digest, total):
            raise errdefs.AlreadyExists(f"content {digest}")
        lease = self.locker.try_lock(ref, new_holder_id())
        try:
            if digest is not None and self.blobs.committed(digest, total):
                raise errdefs.AlreadyExists(f"content {digest}")
            vanished: FileNotFoundError | None = None
            for _ in range(_OPEN_ATTEMPTS):
                try:
                    return self._open_writer(ref, total, digest, lease)
                except FileNotFoundError as e:
                    # The directory was removed under us: a commit or abort by a writer
                    # the lock did not exclude (an expired lease). Start over.
                    vanished = e
            raise errdefs.Aborted(
                f"open ingest {ref}: removed concurrently {_OPEN_ATTEMPTS} times"
            ) from vanished
        except OSError as e:
            lease.release()
            raise from_os_error(e, f"open ingest {ref}") from e
        except BaseException:
            lease.release()
            raise

    def _open_writer(
        self, ref: str, total: int, expected: Digest | None, lease: Lease
    ) -> LocalWriter:
        """Open the ingest directory, held (:meth:`IngestDir.held`), and this writer's
        data file. Raises OSError: FileNotFoundError when the directory vanished or was
        replaced meanwhile (the caller starts over). A directory this call created is
        removed again if opening fails (through the held descriptor once it is held)."""
        ingest = self._ingest(ref)
        created = ingest.create()
        try:
            held, held_fd = ingest.held()
        except BaseException:
            if created:
                ingest.remove()
            raise
        try:
            return self._open_in(held, ref, total, expected, lease, held_fd)
        except BaseException:
            try:
                if created:
                    held.remove()
            finally:
                os.close(held_fd)
            raise

    def _open_in(
        self,
        ingest: IngestDir,
        ref: str,
        total: int,
        expected: Digest | None,
        lease: Lease,
        held_fd: int,
    ) -> LocalWriter:
        algorithm = expected.algorithm if expected is not None else CANONICAL
        stored_ref = ingest.read_ref()
        if stored_ref is not None and stored_ref != ref:
            raise errdefs.FailedPrecondition(f"ref key does not match: {stored_ref!r} != {ref!r}")
        self._check_budget(ingest, ref, total or (ingest.total() if stored_ref else 0))
        if stored_ref is None:
            # New, or a directory a crash left incomplete: start it over.
            for leftover in ingest.data_files():
                leftover.remove()
            ingest.begin(ref, utcnow(), total, expected)
        else:
            stored_total = ingest.total()
            check_resume_total(ref, total, stored_total)
            if total > 0 and stored_total == 0:
                ingest.set_total(total)
            if expected is not None and expected != ingest.expected():
                ingest.set_expected(expected)
        last_write = _mtime_ns(ingest)
        ident = new_data_id()
        fd, hasher, offset = self._adopt(ingest, ident, algorithm)
        try:
            ingest.set_current(ident)
            if last_write is not None:
                # A copied prefix keeps the time of its last write: a resume reports
                # when the ingest was last written, not when it was reopened.
                os.utime(fd, ns=(last_write, last_write))
            mtime = datetime.fromtimestamp(os.fstat(fd).st_mtime_ns / 1e9, UTC)
        except BaseException:
            os.close(fd)
            raise
        for leftover in ingest.data_files():
            if leftover.id != ident:
                with contextlib.suppress(OSError):  # best effort: it is never read again
                    leftover.remove()
        started = ingest.started_at() or utcnow()
        updated = max(mtime, started)  # as IngestDir.status reads it
        total = total or ingest.total()
        return LocalWriter(
            self.blobs,
            ref,
            ingest,
            lease,
            ident,
            fd,
            hasher,
            algorithm,
            offset,
            total,
            expected or ingest.expected(),
            started,
            fsync=self.fsync,
            meter=self.meter,
            updated_at=updated,
            keep_cache=self.keep_cache,
            held_fd=held_fd,
        )

    def _check_budget(self, ingest: IngestDir, ref: str, total: int) -> None:
        """ResourceExhausted unless the rest of an ingest of known ``total`` fits in
        the budget (checked before a byte is written or fetched)."""
        if total <= 0 or not self.meter.budget.limited:
            return
        held = 0
        data = ingest.current() if ingest.read_ref() is not None else None
        if data is not None:
            with contextlib.suppress(FileNotFoundError):
                held = os.lstat(data.path).st_size
        self.meter.check(max(total - held, 0), f"ingest {ref} of {total} bytes")

    def _adopt(self, ingest: IngestDir, ident: str, algorithm: str) -> tuple[int, Hasher, int]:
        """Open the new writer's data file ``data.<ident>`` holding the ingest's bytes so
        far: a sealed file is claimed in place (renamed, then re-hashed); a file that
        may still have a writer is copied. Returns (fd, hasher, offset). Raises OSError."""
        own = ingest.data_path(ident)
        previous = ingest.current()
        for _ in range(3):
            if previous is None or not previous.sealed:
                break
            sealed = previous.path
            try:
                os.rename(sealed, own)  # atomic: one claimant wins
            except FileNotFoundError:
                previous = ingest.current()  # claimed by someone else: look again
                continue
            try:
                fd = open_adoptable(own, os.O_RDWR)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.rename(own, sealed)  # give it back, sealed, for a later try
                raise
            if fd is None:
                # Planted since it was listed: not a regular file, or sparse (writers
                # write front to back). Never read; this writer starts from nothing.
                remove_tree(own)
                previous = None
                break
            if not _ours_alone(fd):
                # Another user's file, or one with a second name: whoever holds it could
                # change its bytes after they are hashed. Copy what it holds instead.
                os.close(fd)
                os.rename(own, sealed)  # OSError: the caller maps it (ENOENT: start over)
                previous = DataFile(sealed, previous.id, False)
                break
            try:
                hasher, offset = hash_fd(fd, algorithm)
                os.lseek(fd, offset, os.SEEK_SET)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.rename(own, sealed)
                raise
            return fd, hasher, offset
        fd = os.open(own, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            hasher, offset = copy_prefix(previous.path if previous else None, fd, algorithm)
        except BaseException:
            os.close(fd)
            own.unlink(missing_ok=True)
            raise
        return fd, hasher, offset

    def put(
        self,
        ref: str,
        desc: Descriptor,
        data: bytes | bytearray | memoryview,
        labels: Mapping[str, str] | None = None,
    ) -> Info:
        """Commit ``data`` as ``desc`` in one call (see :meth:`store.protocols.Putter.put`).

        Content of at most :attr:`small_blob_max` bytes, when ``ref`` has no unfinished
        ingest, takes the small-blob path (:meth:`Blobs.put`): no ingest directory, no
        ref lock, no metadata file without labels; as durable as a commit, and a crash
        leaves nothing. Anything else goes through :meth:`writer` (resuming that ingest).
        InvalidArgument for a bad ref or labels; FailedPrecondition when ``data`` has
        another size than a known ``desc.size`` or another digest (nothing is kept);
        AlreadyExists when the content is committed; Unavailable when a writer holds
        ``ref``'s unfinished ingest; ResourceExhausted when it does not fit in the budget
        or on the disk.
        """
        validate_ref(ref)
        digest = Digest.parse(desc.digest)
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        new_labels = {k: v for k, v in (labels or {}).items() if v != ""}
        validate_labels(new_labels)
        # Data that is not desc touches nothing, not even another writer's ingest.
        check_commit_size(ref, size, desc.size)
        hasher = digest.hasher()
        hasher.update(data)
        check_commit_digest(Digest(digest.algorithm, hasher.hexdigest()), digest)
        if size > self.small_blob_max or self._ingest(ref).exists():
            return put_through_writer(self, ref, desc, data, new_labels)
        if self.blobs.committed(digest, size):
            raise errdefs.AlreadyExists(f"content {digest}")
        self.meter.check(size, f"put {ref} of {size} bytes")
        info = self.blobs.put(digest, data, new_labels)
        self.meter.charge(size)
        return info

    # IngestManager ---------------------------------------------------------------------
    def status(self, ref: str) -> Status:
        """The Status of ``ref``'s ingest (offset = bytes on disk; holder = who holds the
        lock now, if anyone). NotFound if there is none; InvalidArgument for a bad ref.
        The holder is looked up only for an ingest that exists (asking a cross-host
        locker is a round trip)."""
        validate_ref(ref)
        ingest = self._ingest(ref)
        try:
            if ingest.read_ref() != ref:
                raise errdefs.NotFound(f"reference {ref}")
            return ingest.status(ref, self.locker.holder(ref))
        except OSError as e:
            raise from_os_error(e, f"status {ref}") from e

    def list_statuses(self, *filters: str) -> list[Status]:
        """Every ingest whose ref matches any filter (field ``ref``), sorted by ref.
        InvalidArgument for a malformed filter."""
        flt = parse(*filters)
        out: list[Status] = []
        try:
            entries = os.listdir(self.layout.ingest)
        except FileNotFoundError:
            return out
        except OSError as e:
            raise from_os_error(e, "list ingests") from e
        for name in entries:
            ingest = IngestDir(self.layout.ingest / name)
            try:
                ref = ingest.read_ref()
                if ref is None or not flt.match(status_fields(ref)):
                    continue
                out.append(ingest.status(ref, self.locker.holder(ref)))
            except (errdefs.NotFound, OSError):
                continue  # gone meanwhile, or not readable by this user: not listed
        out.sort(key=lambda s: s.ref)
        return out

    def abort(self, ref: str) -> None:
        """Remove ``ref``'s ingest. NotFound if there is none, Unavailable while a
        writer holds it, InvalidArgument for a bad ref."""
        validate_ref(ref)
        ingest = self._ingest(ref)
        if not ingest.exists():
            raise errdefs.NotFound(f"reference {ref}")
        lease = self.locker.try_lock(ref, new_holder_id())
        try:
            if not ingest.exists():
                raise errdefs.NotFound(f"reference {ref}")
            try:
                stored = ingest.read_ref()
            except OSError as e:
                raise from_os_error(e, f"abort {ref}") from e
            if stored is not None and stored != ref:
                raise errdefs.NotFound(f"reference {ref}")
            held = self._held(ingest)
            try:
                remove_tree(ingest.path, strict=True)
            except OSError as e:
                raise from_os_error(e, f"abort {ref}") from e
            self.meter.credit(held)
        finally:
            lease.release()

    @staticmethod
    def _held(ingest: IngestDir) -> int:
        """The bytes an ingest's data files hold (0 for none)."""
        held = 0
        for data in ingest.data_files():
            with contextlib.suppress(FileNotFoundError):
                held += os.lstat(data.path).st_size
        return held

    # Manager ---------------------------------------------------------------------------
    def info(self, digest: Digest | str) -> Info:
        """The blob's Info; NotFound if it is not committed, InvalidArgument for a
        malformed digest."""
        return self.blobs.info(Digest.parse(digest))

    def update(self, info: Info, *fieldpaths: str) -> Info:
        """Change labels: paths ``labels`` (replace all) or ``labels.<key>`` (one key; an
        empty value deletes it); no paths replaces all. InvalidArgument for another path
        or an oversize label, NotFound for a missing blob. Returns the new Info."""
        return self.blobs.update(info, tuple(fieldpaths))

    def walk(self, *filters: str) -> Iterator[Info]:
        """Every committed blob matching any filter (fields ``digest``, ``labels.<key>``),
        by algorithm then digest. Filters are parsed before this returns
        (InvalidArgument); files under ``blobs/`` that are not digests are skipped."""
        return self.blobs.walk(parse(*filters))

    def delete(self, digest: Digest | str) -> None:
        """Remove a blob and its labels; NotFound if it is not committed."""
        self.meter.credit(self.blobs.delete(Digest.parse(digest)))

    def verify(self, digest: Digest | str) -> Info:
        """Re-hash a committed blob; DataLoss if its bytes no longer match its digest,
        NotFound if it is not committed."""
        return self.blobs.verify(Digest.parse(digest))


def _mtime_ns(ingest: IngestDir) -> int | None:
    """When the ingest's current data file was last written (None: no file)."""
    data = ingest.current()
    if data is None:
        return None
    try:
        return os.lstat(data.path).st_mtime_ns
    except FileNotFoundError:
        return None


def _ours_alone(fd: int) -> bool:
    """Whether the file open as ``fd`` belongs to this process's user and has no other
    name (only then may a writer claim it in place)."""
    st = os.fstat(fd)
    return st.st_uid == os.geteuid() and st.st_nlink == 1


__all__ = ["LocalStore"]
