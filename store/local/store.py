"""The local filesystem store, with containerd's semantics and error kinds.

Layout under the root (which is also an OCI image layout)::

    oci-layout, index.json         the OCI image layout (see store.ocilayout)
    blobs/<alg>/<hex>              committed blobs, read-only
    meta/<alg>/<hex>.json          created_at, updated_at and labels of each blob
    ingest/<sha256(ref)>/          one directory per ingest (see store.local.ingest)
    locks/ref-<sha256(ref)>.lock   host-local ref locks, holding their holder's JSON
    locks/blob-<alg>-<hex>.lock    serialises publishing, relabelling and deleting a blob
    quarantine/                    blobs found corrupt on disk, moved aside
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ingestq import errdefs
from ingestq.store import filters as filterlang
from ingestq.store import labels as labelrules
from ingestq.store.digest import ALGORITHMS, CANONICAL, Digest, Hasher
from ingestq.store.images import ensure_layout
from ingestq.store.local.blobs import (
    FileReaderAt,
    hash_fd,
    hash_path,
    meta_to_json,
    read_info,
    read_meta,
)
from ingestq.store.local.ingest import IngestDir, new_data_id, remove_tree, write_atomic
from ingestq.store.local.writer import LocalWriter, copy_prefix, fsync_dir
from ingestq.store.lockfile import LockFile
from ingestq.store.locks import ChainLocker, FileRefLocker, Lease, RefLocker, new_holder_id, ref_key
from ingestq.store.oserrors import from_os_error
from ingestq.store.values import Descriptor, Info, Status, utcnow

MAX_REF_BYTES = 4096
_OPEN_ATTEMPTS = 5


def validate_ref(ref: str) -> None:
    """Raise InvalidArgument for an empty ref, one over 4096 UTF-8 bytes, one that is not
    valid UTF-8, or one holding NUL or other control characters. Any other string is a
    valid ref: refs only ever name files through their sha256, so none can escape."""
    if not isinstance(ref, str) or not ref:
        raise errdefs.InvalidArgument("ref must not be empty")
    try:
        size = len(ref.encode("utf-8"))
    except UnicodeEncodeError:
        raise errdefs.InvalidArgument(f"ref {ref[:32]!r} is not valid UTF-8") from None
    if size > MAX_REF_BYTES:
        raise errdefs.InvalidArgument(
            f"ref {ref[:32]!r}... is {size} bytes, longer than {MAX_REF_BYTES}"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in ref):
        raise errdefs.InvalidArgument(f"ref {ref[:64]!r} contains control characters")


class LocalStore:
    """A :class:`store.protocols.Store` on a local (or shared) filesystem.

    Writers take the host-local file lock of their ref, then each of ``lockers`` (e.g. a
    Redis lease for many hosts). :attr:`locker` is the combined lock and may be replaced
    (tests replace it to prove the store is correct without one). ``fsync=False`` skips
    durability syncs (for tests). Raises PermissionDenied / ResourceExhausted (or another
    kind) when the root cannot be created.
    """

    def __init__(
        self, root: str | os.PathLike[str], lockers: Sequence[RefLocker] = (), *, fsync: bool = True
    ) -> None:
        self.root = Path(root).absolute()
        self.fsync = fsync
        try:
            for sub in ("blobs", "ingest", "locks", "meta"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            ensure_layout(self.root)
        except OSError as e:
            raise from_os_error(e, f"open store {self.root}") from e
        self.file_locker = FileRefLocker(self.root / "locks")
        self.locker: RefLocker = (
            ChainLocker([self.file_locker, *lockers]) if lockers else self.file_locker
        )

    # paths ---------------------------------------------------------------------------
    def blob_path(self, digest: Digest | str) -> Path:
        """Where a committed blob lives (InvalidArgument for a malformed digest)."""
        d = Digest.parse(digest)
        return self.root / "blobs" / d.algorithm / d.encoded

    def _meta_path(self, digest: Digest) -> Path:
        return self.root / "meta" / digest.algorithm / f"{digest.encoded}.json"

    def _ingest(self, ref: str) -> IngestDir:
        return IngestDir(self.root / "ingest" / ref_key(ref))

    @contextlib.contextmanager
    def _blob_lock(self, digest: Digest) -> Iterator[None]:
        lock = LockFile(self.root / "locks" / f"blob-{digest.algorithm}-{digest.encoded}.lock")
        try:
            lock.acquire(blocking=True)
        except OSError as e:
            raise from_os_error(e, f"lock content {digest}") from e
        try:
            yield
        finally:
            lock.release()

    def exists(self, digest: Digest | str) -> bool:
        """Whether ``digest`` is committed (InvalidArgument for a malformed digest)."""
        return self.blob_path(digest).is_file()

    # Provider --------------------------------------------------------------------------
    def reader_at(self, desc: Descriptor | Digest | str) -> FileReaderAt:
        """A reader for the blob; NotFound if it is not committed."""
        digest = desc.digest if isinstance(desc, Descriptor) else Digest.parse(desc)
        return FileReaderAt(self.blob_path(digest), digest)

    # Ingester --------------------------------------------------------------------------
    def writer(self, ref: str, expected: Descriptor | None = None) -> LocalWriter:
        """Lock ``ref`` and open its ingest, resuming at the stored offset.

        InvalidArgument for a bad ref; Unavailable when the ref is locked
        (``ref <ref> locked for <duration> (since <time>)``); AlreadyExists when
        ``expected.digest`` is committed; FailedPrecondition when ``expected.size``
        differs from the total the ingest started with; PermissionDenied /
        ResourceExhausted when the ingest cannot be written.
        """
        validate_ref(ref)
        total = expected.size if expected is not None and expected.size > 0 else 0
        digest = Digest.parse(expected.digest) if expected is not None else None
        if digest is not None and self._committed(digest, total):
            raise errdefs.AlreadyExists(f"content {digest}")
        lease = self.locker.try_lock(ref, new_holder_id())
        try:
            if digest is not None and self._committed(digest, total):
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

    def _committed(self, digest: Digest, size: int) -> bool:
        """Whether a sound copy of ``digest`` is committed. A blob whose size differs
        from a known ``size`` is re-hashed: if it is intact the caller's size is wrong
        and the content exists; if it is corrupt it is moved to quarantine and the
        content counts as absent."""
        blob = self.blob_path(digest)
        try:
            st = blob.stat()
        except FileNotFoundError:
            return False
        except OSError as e:
            raise from_os_error(e, f"stat content {digest}") from e
        if size <= 0 or st.st_size == size:
            return True
        with self._blob_lock(digest):
            try:
                actual, _ = hash_path(blob, digest.algorithm)
                if actual == digest:
                    return True
                self._quarantine(blob, digest)
            except FileNotFoundError:
                return False
            except OSError as e:
                raise from_os_error(e, f"verify content {digest}") from e
            return False

    def _open_writer(
        self, ref: str, total: int, expected: Digest | None, lease: Lease
    ) -> LocalWriter:
        """Open the ingest directory and this writer's data file. Raises OSError."""
        ingest = self._ingest(ref)
        algorithm = expected.algorithm if expected is not None else CANONICAL
        ingest.path.mkdir(parents=True, exist_ok=True)
        stored_ref = ingest.read_ref()
        if stored_ref is not None and stored_ref != ref:
            raise errdefs.FailedPrecondition(f"ref key does not match: {stored_ref!r} != {ref!r}")
        if stored_ref is None:
            # New, or a directory a crash left incomplete: start it over.
            for leftover in ingest.data_files():
                leftover.path.unlink(missing_ok=True)
            write_atomic(ingest.path / "startedat", utcnow().isoformat())
            if total > 0:
                write_atomic(ingest.path / "total", str(total))
            if expected is not None:
                write_atomic(ingest.path / "expected", str(expected))
            write_atomic(ingest.ref_file, ref)
        else:
            stored_total = ingest.total()
            if total > 0 and stored_total > 0 and total != stored_total:
                raise errdefs.FailedPrecondition(
                    f"provided total differs from status: {total} != {stored_total}"
                    f" (abort ref {ref} to start over)"
                )
            if total > 0 and stored_total == 0:
                write_atomic(ingest.path / "total", str(total))
            if expected is not None and expected != ingest.expected():
                write_atomic(ingest.path / "expected", str(expected))
        ident = new_data_id()
        fd, hasher, offset = self._adopt(ingest, ident, algorithm)
        try:
            ingest.set_current(ident)
            os.utime(fd)
        except BaseException:
            os.close(fd)
            raise
        for leftover in ingest.data_files():
            if leftover.id != ident:
                leftover.path.unlink(missing_ok=True)
        started = ingest.started_at() or utcnow()
        total = total or ingest.total()
        return LocalWriter(
            self,
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
        )

    def _adopt(self, ingest: IngestDir, ident: str, algorithm: str) -> tuple[int, Hasher, int]:
        """Open the new writer's data file ``data.<ident>`` holding the ingest's bytes so
        far: a sealed file is claimed in place (renamed, then re-hashed); a file that
        may still have a writer is copied. Returns (fd, hasher, offset). Raises OSError."""
        own = ingest.data_path(ident)
        previous = ingest.current()
        for _ in range(3):
            if previous is None or not previous.sealed:
                break
            try:
                os.rename(previous.path, own)  # atomic: one claimant wins
            except FileNotFoundError:
                previous = ingest.current()  # claimed by someone else: look again
                continue
            try:
                fd = os.open(own, os.O_RDWR | os.O_CLOEXEC)
                try:
                    hasher, offset = hash_fd(fd, algorithm)
                    os.lseek(fd, offset, os.SEEK_SET)
                except BaseException:
                    os.close(fd)
                    raise
            except BaseException:
                with contextlib.suppress(OSError):
                    os.rename(own, previous.path)  # give it back, sealed, for a later try
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

    def _publish(
        self,
        ref: str,
        ingest: IngestDir,
        data: Path,
        fd: int,
        digest: Digest,
        labels: Mapping[str, str],
    ) -> Info:
        """Link the writer's file (still open as ``fd``) as the blob ``digest``, make it
        read-only and drop the ingest; the metadata is written first, so a failure
        (e.g. a full disk) publishes nothing and keeps the ingest. AlreadyExists if a
        sound copy is committed already (the ingest is dropped); FailedPrecondition if
        the file was taken from the writer (abort, or a writer that took the ref over)."""
        blob = self.blob_path(digest)
        meta = self._meta_path(digest)
        try:
            blob.parent.mkdir(parents=True, exist_ok=True)
            with self._blob_lock(digest):
                try:
                    existing = blob.stat().st_size
                except FileNotFoundError:
                    existing = None
                if existing is not None:
                    if existing == os.fstat(fd).st_size:
                        remove_tree(ingest.path)
                        raise errdefs.AlreadyExists(f"content {digest}")
                    self._quarantine(blob, digest)  # a wrong size: damaged on disk
                old = read_meta(meta)
                now = utcnow()
                self._write_meta(digest, now, now, {**(old[2] if old else {}), **labels})
                try:
                    os.link(data, blob)
                except BaseException as e:
                    self._restore_meta(digest, old)
                    if isinstance(e, FileNotFoundError):
                        raise errdefs.FailedPrecondition(
                            f"ingest {ref} was aborted or taken over by another writer"
                        ) from None
                    raise
                # No ingest name may point at the published inode, or a later writer
                # could claim it; only then is it made read-only.
                data.unlink(missing_ok=True)
                os.fchmod(fd, 0o444)
                if self.fsync:
                    fsync_dir(blob.parent)
            remove_tree(ingest.path)
        except OSError as e:
            raise from_os_error(e, f"commit {ref}") from e
        return read_info(blob, meta, digest)

    def _restore_meta(
        self, digest: Digest, old: tuple[datetime, datetime, dict[str, str]] | None
    ) -> None:
        with contextlib.suppress(OSError):
            if old is None:
                self._meta_path(digest).unlink(missing_ok=True)
            else:
                self._write_meta(digest, *old)

    def _quarantine(self, blob: Path, digest: Digest) -> None:
        """Move a corrupt blob aside (its metadata stays for the next copy). Raises OSError."""
        qdir = self.root / "quarantine"
        qdir.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        with contextlib.suppress(FileNotFoundError):
            os.rename(blob, qdir / f"{digest.algorithm}-{digest.encoded}-{stamp}")

    def _write_meta(
        self, digest: Digest, created: datetime, updated: datetime, labels: Mapping[str, str]
    ) -> None:
        meta = self._meta_path(digest)
        meta.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(meta, meta_to_json(created, updated, labels), sync=self.fsync)

    # IngestManager ---------------------------------------------------------------------
    def status(self, ref: str) -> Status:
        """The Status of ``ref``'s ingest (offset = bytes on disk; holder = who holds the
        lock now, if anyone). NotFound if there is none; InvalidArgument for a bad ref."""
        validate_ref(ref)
        return self._ingest(ref).status(ref, self.locker.holder(ref))

    def list_statuses(self, *filters: str) -> list[Status]:
        """Every ingest whose ref matches any filter (field ``ref``), sorted by ref.
        InvalidArgument for a malformed filter."""
        flt = filterlang.parse(*filters)
        out: list[Status] = []
        try:
            entries = os.listdir(self.root / "ingest")
        except FileNotFoundError:
            return out
        except OSError as e:
            raise from_os_error(e, "list ingests") from e
        for name in entries:
            ingest = IngestDir(self.root / "ingest" / name)
            ref = ingest.read_ref()
            if ref is None or not flt.match(_status_adaptor(ref)):
                continue
            try:
                out.append(ingest.status(ref, self.locker.holder(ref)))
            except errdefs.NotFound:
                continue
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
            stored = ingest.read_ref()
            if stored is not None and stored != ref:
                raise errdefs.NotFound(f"reference {ref}")
            try:
                remove_tree(ingest.path, strict=True)
            except OSError as e:
                raise from_os_error(e, f"abort {ref}") from e
        finally:
            lease.release()

    # Manager ---------------------------------------------------------------------------
    def info(self, digest: Digest | str) -> Info:
        """The blob's Info; NotFound if it is not committed, InvalidArgument for a
        malformed digest."""
        d = Digest.parse(digest)
        return read_info(self.blob_path(d), self._meta_path(d), d)

    def update(self, info: Info, *fieldpaths: str) -> Info:
        """Change labels: paths ``labels`` (replace all) or ``labels.<key>`` (one key; an
        empty value deletes it); no paths replaces all. InvalidArgument for another path
        or an oversize label, NotFound for a missing blob. Returns the new Info."""
        digest = Digest.parse(info.digest)
        blob, meta = self.blob_path(digest), self._meta_path(digest)
        with self._blob_lock(digest):
            current = read_info(blob, meta, digest)
            new_labels = labelrules.apply_update(
                current.labels, info.labels, tuple(fieldpaths), str(digest)
            )
            try:
                self._write_meta(digest, current.created_at, utcnow(), new_labels)
            except OSError as e:
                raise from_os_error(e, f"update {digest}") from e
            return read_info(blob, meta, digest)

    def walk(self, *filters: str) -> Iterator[Info]:
        """Every committed blob matching any filter (fields ``digest``, ``labels.<key>``),
        by algorithm then digest. Filters are parsed before this returns
        (InvalidArgument); files under ``blobs/`` that are not digests are skipped."""
        flt = filterlang.parse(*filters)
        return self._walk(flt)

    def _walk(self, flt: filterlang.Filter) -> Iterator[Info]:
        for alg in sorted(ALGORITHMS):
            directory = self.root / "blobs" / alg
            try:
                names = sorted(os.listdir(directory))
            except FileNotFoundError:
                continue
            except OSError as e:
                raise from_os_error(e, f"list {directory}") from e
            for name in names:
                try:
                    digest = Digest(alg, name)
                except errdefs.InvalidArgument:
                    continue
                try:
                    info = read_info(self.blob_path(digest), self._meta_path(digest), digest)
                except errdefs.NotFound:
                    continue
                if flt.match(_info_adaptor(info)):
                    yield info

    def delete(self, digest: Digest | str) -> None:
        """Remove a blob and its labels; NotFound if it is not committed."""
        d = Digest.parse(digest)
        blob = self.blob_path(d)
        with self._blob_lock(d):
            if not blob.is_file():
                raise errdefs.NotFound(f"content digest {d}")
            try:
                self._meta_path(d).unlink(missing_ok=True)
                blob.unlink()
            except FileNotFoundError:
                raise errdefs.NotFound(f"content digest {d}") from None
            except OSError as e:
                raise from_os_error(e, f"delete {d}") from e

    def verify(self, digest: Digest | str) -> Info:
        """Re-hash a committed blob; DataLoss if its bytes no longer match its digest,
        NotFound if it is not committed."""
        d = Digest.parse(digest)
        info = self.info(d)
        try:
            actual, size = hash_path(self.blob_path(d), d.algorithm)
        except FileNotFoundError:
            raise errdefs.NotFound(f"content {d}") from None
        except OSError as e:
            raise from_os_error(e, f"verify content {d}") from e
        if actual != d:
            raise errdefs.DataLoss(f"content {d} on disk hashes to {actual} ({size} bytes)")
        return info


def _status_adaptor(ref: str) -> filterlang.Adaptor:
    def lookup(fieldpath: Sequence[str]) -> str | None:
        return ref if tuple(fieldpath) == ("ref",) else None

    return lookup


def _info_adaptor(info: Info) -> filterlang.Adaptor:
    def lookup(fieldpath: Sequence[str]) -> str | None:
        if not fieldpath:
            return None
        if fieldpath[0] == "digest":
            return str(info.digest)
        if fieldpath[0] == "labels" and info.labels:
            return info.labels.get(".".join(fieldpath[1:]))
        return None

    return lookup
