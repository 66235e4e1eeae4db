"""Committed blobs, ``blobs/<alg>/<hex>`` (read-only), and their metadata,
``meta/<alg>/<hex>.json`` (created_at, updated_at, labels): :class:`Blobs` owns both,
and is the :class:`Publisher` a writer hands its finished data file to.

A small blob committed with labels by :meth:`Blobs.put` carries its metadata in the
blob file itself, as the extended attribute :data:`META_XATTR` (the same JSON), set
before the file's fsync: the labels become durable and visible in the same step as the
blob, with no metadata file, no second fsync and no blob lock (nobody else can see the
file before its link). A metadata file written from the file's own (relabelling,
quarantine: the same ``created_at``) then takes precedence; any other one beside it was
left by a committer of the same digest that lost the race and was killed, and the two
are merged (:func:`read_blob_meta`). Where the filesystem keeps no user extended
attributes, or the labels do not fit in them, the metadata file is written as for any
blob. The first such blob is preceded by the store's marker ``meta/xattrs``, which
carries the attribute too: a host whose view keeps no attributes gets
FailedPrecondition from gc, relabelling and Info instead of acting on labels it cannot
see, and so does gc on a copy of the store made without them (there, Info shows no
labels: the copy lost them; :func:`check_attributes_readable`). Copy a store root
with its extended attributes (``cp -a``, ``rsync -aX``, ``tar --xattrs``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from ingestq import errdefs
from ingestq.store import quarantine
from ingestq.store.atomic import fsync_dir, write_bytes, write_json
from ingestq.store.codec import BlobMeta, meta_from_json, meta_to_json
from ingestq.store.digest import ALGORITHMS, Digest, Hasher, new_hasher
from ingestq.store.filters import Filter, info_fields
from ingestq.store.labels import apply_update
from ingestq.store.layout import RootLayout
from ingestq.store.local.ingest import IngestDir
from ingestq.store.local.small import TempFile, link_descriptor
from ingestq.store.lockfile import held
from ingestq.store.oserrors import from_os_error
from ingestq.store.ownfiles import NOT_OWN, is_regular, names_file, open_own, remove_tree
from ingestq.store.rules import check_read
from ingestq.store.values import Info, utcnow

#: The largest metadata file read or written: labels take at most 256 KiB, at most
#: 6 bytes of JSON per byte (a control character escaped) and some per label.
MAX_META_FILE = 4 << 20

HASH_CHUNK = 1 << 20
#: The extended attribute holding the metadata of a blob committed by :meth:`Blobs.put`.
META_XATTR = "user.ingestq.meta"
#: Whether this platform's ``os`` has the extended attribute calls (Linux).
_HAS_XATTR = hasattr(os, "setxattr") and hasattr(os, "getxattr")
#: ``setxattr`` errors of a filesystem or security policy that keeps no user attributes.
_XATTR_OFF = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES})
#: ``setxattr`` errors of a value larger than the room the file has for attributes.
_XATTR_FULL = frozenset({errno.E2BIG, errno.ENOSPC, errno.ERANGE})
#: ``getxattr`` errors of a host whose view of the filesystem keeps no attributes (an
#: NFS mount before 4.2, FUSE without them), as opposed to ENODATA: none on this file.
_XATTR_UNSEEN = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
#: The value of :data:`META_XATTR` on the store's marker file (it carries one, so a
#: host, or a copy of the store, that lost the attributes shows it there).
_MARKER_VALUE = b"ingestq: blobs here carry their metadata in this attribute"
_MARKER_TEXT = (
    b"Blobs of this store carry their metadata (labels) as the extended attribute "
    + META_XATTR.encode()
    + b".\nCopy the store with its extended attributes (cp -a, rsync -aX, tar --xattrs).\n"
)


def _set_attribute(fd: int, value: bytes) -> None:
    """Set :data:`META_XATTR` to ``value`` on the read-only file ``fd``: a user
    attribute needs the owner's write permission (whatever the umask left), so the file
    is opened up for it and made read-only again. Raises OSError."""
    os.fchmod(fd, 0o644)
    try:
        os.setxattr(fd, META_XATTR, value)
    finally:
        os.fchmod(fd, 0o444)


class FileReaderAt:
    """A :class:`store.protocols.ReaderAt` over one blob file (``pread`` on an open
    descriptor, so a blob deleted meanwhile stays readable to this reader)."""

    def __init__(self, path: Path, digest: Digest) -> None:
        try:
            self._fd: int | None = open_own(path, os.O_RDONLY)
        except FileNotFoundError:
            raise errdefs.NotFound(f"content {digest}") from None
        except OSError as e:
            if e.errno in NOT_OWN:
                raise errdefs.DataLoss(f"content {digest}: not a regular file") from None
            raise from_os_error(e, f"open content {digest}") from e
        self._size = os.fstat(self._fd).st_size
        self._digest = digest

    @property
    def size(self) -> int:
        """The blob's size in bytes."""
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer only at the end; empty at the
        end). OutOfRange past the end or below 0, InvalidArgument for a negative length,
        FailedPrecondition once closed."""
        if self._fd is None:
            raise errdefs.FailedPrecondition(f"reader for {self._digest} is closed")
        want = check_read(offset, length, self._size)
        try:
            return os.pread(self._fd, want, offset)
        except OSError as e:
            raise from_os_error(e, f"read content {self._digest}") from e

    def close(self) -> None:
        """Release the descriptor. Closing twice is fine."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.close()


def hash_fd(fd: int, algorithm: str, *, limit: int | None = None) -> tuple[Hasher, int]:
    """Hash the file behind ``fd`` from offset 0 (up to ``limit`` bytes) with ``pread``.

    Returns the hasher and the number of bytes hashed. Raises OSError.
    """
    hasher = new_hasher(algorithm)
    offset = 0
    while limit is None or offset < limit:
        want = HASH_CHUNK if limit is None else min(HASH_CHUNK, limit - offset)
        chunk = os.pread(fd, want, offset)
        if not chunk:
            break
        hasher.update(chunk)
        offset += len(chunk)
    return hasher, offset


def hash_path(path: Path, algorithm: str) -> tuple[Digest, int]:
    """The digest and size of the regular file at ``path`` (never a symlink's target).
    Raises OSError (ELOOP or EINVAL when it is not a regular file)."""
    fd = open_own(path, os.O_RDONLY)
    try:
        hasher, size = hash_fd(fd, algorithm)
    finally:
        os.close(fd)
    return Digest(algorithm, hasher.hexdigest()), size


def read_meta(meta: Path) -> BlobMeta | None:
    """A blob's metadata file; None if it is missing or garbled (a blob without
    readable metadata still exists; it has no labels). PermissionDenied, DataLoss or
    another kind when the file is there but cannot be read (EACCES, EIO, a directory):
    a caller that went on without its labels could drop a gc root."""
    try:
        fd = open_own(meta, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in NOT_OWN:  # a directory, FIFO or symlink: never read through
            raise errdefs.DataLoss(
                f"read {meta}: not a metadata file (not a regular file)"
            ) from None
        raise from_os_error(e, f"read {meta}") from e
    try:
        with os.fdopen(fd, "rb") as f:
            text = f.read(MAX_META_FILE + 1)
    except OSError as e:
        raise from_os_error(e, f"read {meta}") from e
    if len(text) > MAX_META_FILE:  # no labels take that much: not ours to trust
        raise errdefs.DataLoss(f"read {meta}: longer than {MAX_META_FILE} bytes")
    return _decode_meta(text)


def _decode_meta(raw: bytes) -> BlobMeta | None:
    """Metadata JSON as a file or attribute holds it; None when garbled."""
    try:
        return meta_from_json(json.loads(raw))
    except (ValueError, AttributeError, errdefs.InvalidArgument):
        return None


def read_file_meta(layout: RootLayout, blob: str | Path) -> BlobMeta | None:
    """The metadata the blob file ``blob`` carries as :data:`META_XATTR`; None if it
    has none, is gone, or the value is garbled (symlinks are not followed), or this
    host's view of the filesystem keeps no attributes and the store has never used them.
    FailedPrecondition when it keeps none although the store's marker says its blobs
    carry them (:func:`check_attributes_readable`); PermissionDenied, DataLoss or
    another kind when the attribute is there but unreadable: a caller that went on
    would act on labels it cannot see."""
    if not _HAS_XATTR:
        check_attributes_readable(layout)
        return None
    try:
        raw = os.getxattr(blob, META_XATTR, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOENT):
            return None
        if e.errno in _XATTR_UNSEEN:
            check_attributes_readable(layout)
            return None
        # EIO, EACCES, ...: the labels are there but unreadable; going on without
        # them could drop a gc root.
        raise from_os_error(e, f"read the labels of {blob}") from e
    return _decode_meta(raw)


def check_attributes_readable(layout: RootLayout) -> None:
    """FailedPrecondition when blobs of this store carry their metadata as extended
    attributes (:attr:`RootLayout.xattr_marker` exists) and this host cannot read the
    marker's own attribute back: a mount without them (NFS before 4.2, FUSE), or a copy
    of the store that dropped them. Such a view misses labels, gc roots among them."""
    marker = layout.xattr_marker
    try:
        if not marker.exists():
            return
    except OSError as e:
        raise from_os_error(e, f"stat {marker}") from e
    try:
        seen = _HAS_XATTR and os.getxattr(marker, META_XATTR, follow_symlinks=False)
    except OSError:
        seen = False
    if seen != _MARKER_VALUE:
        raise errdefs.FailedPrecondition(
            f"blobs under {layout.root} carry their labels as the extended attribute "
            f"{META_XATTR}, which this host cannot read back from {marker}: a mount "
            "without extended attributes (NFS before 4.2, FUSE), or a copy of the store "
            "made without them (use cp -a, rsync -aX, tar --xattrs); run this where the "
            "attributes are seen"
        )


def read_blob_meta(
    layout: RootLayout, digest: Digest, *, path: str | Path | None = None
) -> BlobMeta | None:
    """The metadata of the blob ``digest`` (``path``: its file, when the caller has
    it): its metadata file, what the blob file carries (:func:`read_file_meta`), or
    both merged; None when neither is there or readable (the blob then has no labels,
    and its times are the file's). Relabelling and quarantine write the metadata file
    from the file's own (same ``created_at``), and it then wins; any other metadata
    file was left by a committer of the same digest that lost the race to this file
    (killed before it could remove it), and neither may hide the other's labels.
    FailedPrecondition as :func:`read_file_meta`."""
    written = read_meta(layout.blob_meta(digest))
    carried = read_file_meta(layout, path if path is not None else layout.blob(digest))
    if carried is None:
        return written
    if written is None or written.created_at == carried.created_at:
        return written or carried
    return BlobMeta(
        carried.created_at,
        max(written.updated_at, carried.updated_at),
        {**written.labels, **carried.labels},
    )


class Publisher(Protocol):
    """Turns a writer's finished data file into a committed blob."""

    def publish(
        self,
        ref: str,
        ingest: IngestDir,
        data: Path,
        fd: int,
        digest: Digest,
        labels: Mapping[str, str],
    ) -> Info:
        """Publish ``data`` (still open as ``fd``, whose bytes hash to ``digest``) as
        the blob ``digest`` with ``labels`` and drop the ingest. AlreadyExists if the
        content is committed already (the ingest is dropped); FailedPrecondition if the
        file was taken from the writer; PermissionDenied / ResourceExhausted (or another
        kind) on a filesystem error, keeping the ingest."""
        ...


def _link_held(fd: int, data: Path, blob: Path) -> None:
    """Give the writer's file, open as ``fd``, the name ``blob``: the open file itself
    (through ``/proc/self/fd``), not whatever ``data`` names by now, so a file planted
    under that name is never published. Where that link is refused (EXDEV, EPERM, no
    ``/proc``), ``data`` is linked by name once it is checked to be the same file.
    FileNotFoundError when the file has no name left (aborted, taken over) or ``data``
    is not it; FileExistsError when ``blob`` exists; other OSError."""
    try:
        if link_descriptor(fd, blob):
            return
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno == errno.ENOENT and os.fstat(fd).st_nlink == 0:
            raise
    if not names_file(data, fd):
        raise FileNotFoundError(errno.ENOENT, "data file replaced", str(data))
    os.link(data, blob, follow_symlinks=False)
    if not names_file(blob, fd):  # swapped between the check and the link
        os.unlink(blob)
        raise FileNotFoundError(errno.ENOENT, "data file replaced", str(data))


class Blobs:
    """The committed blobs and their metadata under one store root.

    Publishing, relabelling and deleting a blob hold its lock file, so they are
    serialised between threads and processes; a small :meth:`put` takes no lock (it
    links a file nobody else has seen and never replaces one). ``fsync`` makes
    publishing and metadata writes durable.
    """

    def __init__(self, layout: RootLayout, *, fsync: bool = True) -> None:
        self.layout = layout
        self.fsync = fsync
        self.temp = TempFile()
        #: Whether :meth:`put` stores labels in the blob file (:data:`META_XATTR`);
        #: switched off for good the first time the filesystem refuses one.
        self.xattrs = _HAS_XATTR
        self._marked = False  # the store's xattr marker is known to exist

    def path(self, digest: Digest) -> Path:
        """Where the blob ``digest`` is (or would be) committed."""
        return self.layout.blob(digest)

    @contextlib.contextmanager
    def lock(self, digest: Digest) -> Iterator[None]:
        """Hold ``digest``'s blob lock (PermissionDenied / ResourceExhausted if the lock
        file cannot be created, Unavailable if another holds it for
        ``INGESTQ_LOCK_FILE_WAIT`` seconds)."""
        with held(self.layout.blob_lock(digest), what=f"lock content {digest}"):
            yield

    def info(self, digest: Digest) -> Info:
        """The blob's Info from its file and metadata. NotFound if it is absent; DataLoss
        if what is at its name is not a regular file (a link, a directory, a FIFO
        planted there), as for a read."""
        try:
            st = os.lstat(self.path(digest))
        except FileNotFoundError:
            raise errdefs.NotFound(f"content {digest}") from None
        except OSError as e:
            raise from_os_error(e, f"stat content {digest}") from e
        if not stat.S_ISREG(st.st_mode):
            raise errdefs.DataLoss(f"content {digest} is not a regular file (planted?)")
        meta = read_blob_meta(self.layout, digest)
        if meta is None:
            created = datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)
            meta = BlobMeta(created, created)
        return Info(digest, st.st_size, meta.created_at, meta.updated_at, meta.labels)

    def committed(self, digest: Digest, size: int) -> bool:
        """Whether a sound copy of ``digest`` is committed. A blob whose size differs
        from a known ``size`` is re-hashed: if it is intact the caller's size is wrong
        and the content exists; if it is corrupt it is moved to quarantine and the
        content counts as absent."""
        blob = self.path(digest)
        try:
            st = os.lstat(blob)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise from_os_error(e, f"stat content {digest}") from e
        if not stat.S_ISREG(st.st_mode):  # planted (a symlink, FIFO, ...): not content
            with self.lock(digest):
                try:
                    self._quarantine(digest)
                except OSError as e:
                    raise from_os_error(e, f"move aside {digest}") from e
            return False
        if size <= 0 or st.st_size == size:
            return True
        with self.lock(digest):
            try:
                actual, _ = hash_path(blob, digest.algorithm)
                if actual == digest:
                    return True
                self._quarantine(digest)
            except FileNotFoundError:
                return False
            except OSError as e:
                raise from_os_error(e, f"verify content {digest}") from e
            return False

    def publish(
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
        blob = self.path(digest)
        try:
            blob.parent.mkdir(parents=True, exist_ok=True)
            with self.lock(digest):
                try:
                    st = os.lstat(blob)
                    existing = st.st_size if stat.S_ISREG(st.st_mode) else -1
                except FileNotFoundError:
                    existing = None
                if existing is not None:
                    if existing == os.fstat(fd).st_size:
                        ingest.remove()
                        raise errdefs.AlreadyExists(f"content {digest}")
                    self._quarantine(digest)  # a wrong size: damaged on disk
                old = read_meta(self.layout.blob_meta(digest))
                now = utcnow()
                meta = BlobMeta(now, now, {**(old.labels if old else {}), **labels})
                self._write_meta(digest, meta)
                try:
                    _link_held(fd, data, blob)
                except BaseException as e:
                    self._restore_meta(digest, old)
                    if isinstance(e, FileNotFoundError):
                        raise errdefs.FailedPrecondition(
                            f"ingest {ref} was aborted or taken over by another writer"
                        ) from None
                    if isinstance(e, FileExistsError):
                        # A small put (which takes no blob lock) linked it meanwhile; its
                        # bytes were checked against the digest as these were.
                        ingest.remove()
                        raise errdefs.AlreadyExists(f"content {digest}") from None
                    raise
                # No ingest name may point at the published inode, or a later writer
                # could claim it; only then is it made read-only.
                remove_tree(data, strict=is_regular(data))
                os.fchmod(fd, 0o444)
                if self.fsync:
                    fsync_dir(blob.parent)
            ingest.remove()
            size = os.fstat(fd).st_size
        except OSError as e:
            raise from_os_error(e, f"commit {ref}") from e
        # From what was written, not read back: the blob is committed whatever a read
        # of its labels would say now.
        return Info(digest, size, meta.created_at, meta.updated_at, meta.labels)

    def put(
        self, digest: Digest, data: bytes | bytearray | memoryview, labels: Mapping[str, str]
    ) -> Info:
        """Commit ``data`` (already checked to hash to ``digest``) as the blob ``digest``
        with one temporary file: written, fsynced, linked under the digest (never over an
        existing file), then the directory fsynced. No ingest directory, no metadata file
        and no blob lock: ``labels`` go into the file itself (:data:`META_XATTR`) before
        its fsync. Only where the filesystem refuses that, or when metadata is left from
        an earlier copy, is the metadata file written under the lock, as
        :meth:`publish` does. AlreadyExists if the blob is committed meanwhile (an
        entry at its name that is not a sound copy, a link or a FIFO planted there, is
        moved aside first, :meth:`committed`); PermissionDenied / ResourceExhausted (or
        another kind) on a filesystem error, leaving nothing."""
        try:
            return self._put(digest, data, labels)
        except errdefs.AlreadyExists:
            if self.committed(digest, len(data)):
                raise
            return self._put(digest, data, labels)

    def _put(
        self, digest: Digest, data: bytes | bytearray | memoryview, labels: Mapping[str, str]
    ) -> Info:
        blob = self.path(digest)
        try:
            try:
                fd, tmp = self.temp.open(blob.parent)
            except FileNotFoundError:
                blob.parent.mkdir(parents=True, exist_ok=True)
                if self.fsync:
                    fsync_dir(blob.parent.parent)
                fd, tmp = self.temp.open(blob.parent)
            try:
                view = memoryview(data).cast("B")
                pos = 0
                while pos < len(view):
                    pos += os.write(fd, view[pos:])
                left = self.layout.blob_meta(digest).exists()
                carried = self._label_file(fd, labels) if labels and not left else None
                if self.fsync:
                    os.fsync(fd)
                if carried is not None:
                    self.temp.link(fd, tmp, blob)
                    meta = carried
                elif labels or left:
                    with self.lock(digest):
                        if blob.exists():  # no metadata file beside another's blob
                            raise FileExistsError(errno.EEXIST, "blob exists", str(blob))
                        old = read_meta(self.layout.blob_meta(digest))
                        now = utcnow()
                        meta = BlobMeta(now, now, {**(old.labels if old else {}), **labels})
                        self._write_meta(digest, meta)
                        try:
                            self.temp.link(fd, tmp, blob)
                        except BaseException:
                            self._restore_meta(digest, old)
                            raise
                else:
                    # No metadata: Info reads created_at and updated_at from the file.
                    mtime = datetime.fromtimestamp(os.fstat(fd).st_mtime_ns / 1e9, UTC)
                    self.temp.link(fd, tmp, blob)
                    meta = BlobMeta(mtime, mtime)
            finally:
                os.close(fd)
                if tmp is not None:
                    tmp.unlink(missing_ok=True)
            if self.fsync:
                fsync_dir(blob.parent)
        except FileExistsError:
            raise errdefs.AlreadyExists(f"content {digest}") from None
        except OSError as e:
            raise from_os_error(e, f"commit {digest}") from e
        return Info(digest, len(view), meta.created_at, meta.updated_at, meta.labels)

    def _label_file(self, fd: int, labels: Mapping[str, str]) -> BlobMeta | None:
        """Store new metadata with ``labels`` in the unpublished blob file ``fd`` as
        :data:`META_XATTR` (writing the store's :attr:`RootLayout.xattr_marker` first
        if it is missing) and return it; None when the filesystem keeps no user
        attributes (:attr:`xattrs` is then switched off) or has no room for this value.
        Raises OSError for any other failure."""
        if not self.xattrs:
            return None
        now = utcnow()
        meta = BlobMeta(now, now, dict(labels))
        value = json.dumps(meta_to_json(meta), sort_keys=True, separators=(",", ":")).encode()
        try:
            if not self._marked:
                # Before any blob of this store carries one; where the filesystem keeps
                # no attributes, the marker's own fails and no marker is left.
                self._mark_store()
                self._marked = True
            _set_attribute(fd, value)
        except OSError as e:
            if e.errno in _XATTR_FULL:
                return None
            if e.errno in _XATTR_OFF:
                self.xattrs = False
                return None
            raise
        return meta

    def _mark_store(self) -> None:
        """Write the store's :attr:`RootLayout.xattr_marker`, read-only and carrying
        :data:`_MARKER_VALUE` (which gc reads back), unless it exists. Raises OSError."""
        marker = self.layout.xattr_marker
        if marker.exists():
            # Even one without the value stays as it is: a copy of the store that lost
            # the attributes must keep failing gc's check.
            return

        marker.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(marker, _MARKER_TEXT, sync=self.fsync,
                    finish=lambda fd: _set_attribute(fd, _MARKER_VALUE))  # fmt: skip

    def update(self, info: Info, fieldpaths: tuple[str, ...]) -> Info:
        """Change the labels of ``info.digest`` along ``fieldpaths`` (see
        :func:`store.labels.apply_update`). NotFound for a missing blob,
        InvalidArgument for another path or an oversize label."""
        digest = info.digest
        with self.lock(digest):
            current = self.info(digest)
            labels = apply_update(current.labels, info.labels, fieldpaths, str(digest))
            try:
                self._write_meta(digest, BlobMeta(current.created_at, utcnow(), labels))
            except OSError as e:
                raise from_os_error(e, f"update {digest}") from e
            return self.info(digest)

    def walk(self, flt: Filter) -> Iterator[Info]:
        """Every committed blob matching ``flt``, by algorithm then digest; files under
        ``blobs/`` that are not digests are skipped."""
        for alg in sorted(ALGORITHMS):
            directory = self.layout.blob_dir(alg)
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
                    info = self.info(digest)
                except errdefs.NotFound:
                    continue
                except errdefs.DataLoss:
                    if not is_regular(self.path(digest)):
                        continue  # not a regular file at its name: not content
                    raise  # its metadata is damaged: shown, not hidden
                if flt.match(info_fields(info)):
                    yield info

    def delete(self, digest: Digest) -> int:
        """Remove a blob and its labels and return its size; NotFound if it is not
        committed."""
        blob = self.path(digest)
        with self.lock(digest):
            try:
                st = os.lstat(blob)
            except FileNotFoundError:
                raise errdefs.NotFound(f"content digest {digest}") from None
            except OSError as e:
                raise from_os_error(e, f"delete {digest}") from e
            if not stat.S_ISREG(st.st_mode):
                raise errdefs.NotFound(f"content digest {digest}")
            try:
                size = st.st_size
                # The blob first (as gc does): killed in between, an orphan metadata
                # file is swept by gc, while a blob without its file would show the
                # labels its attribute had before any relabelling.
                blob.unlink()
                self.layout.blob_meta(digest).unlink(missing_ok=True)
            except FileNotFoundError:
                raise errdefs.NotFound(f"content digest {digest}") from None
            except OSError as e:
                raise from_os_error(e, f"delete {digest}") from e
        return size

    def verify(self, digest: Digest) -> Info:
        """Re-hash a committed blob; DataLoss if its bytes no longer match its digest,
        NotFound if it is not committed."""
        info = self.info(digest)
        try:
            actual, size = hash_path(self.path(digest), digest.algorithm)
        except FileNotFoundError:
            raise errdefs.NotFound(f"content {digest}") from None
        except OSError as e:
            if e.errno in NOT_OWN:
                raise errdefs.DataLoss(f"content {digest}: not a regular file") from None
            raise from_os_error(e, f"verify content {digest}") from e
        if actual != digest:
            raise errdefs.DataLoss(f"content {digest} on disk hashes to {actual} ({size} bytes)")
        return info

    def _restore_meta(self, digest: Digest, old: BlobMeta | None) -> None:
        with contextlib.suppress(OSError):
            if old is None:
                self.layout.blob_meta(digest).unlink(missing_ok=True)
            else:
                self._write_meta(digest, old)

    def _quarantine(self, digest: Digest) -> None:
        """Move a corrupt blob aside; its metadata stays for the next copy (metadata the
        file carries is first written to the metadata file). Raises OSError;
        FailedPrecondition as :func:`read_file_meta`."""
        carried = (
            read_file_meta(self.layout, self.path(digest))
            if is_regular(self.path(digest))
            else None  # planted: carries nothing of ours
        )
        if carried is not None:
            self._write_meta(digest, read_blob_meta(self.layout, digest) or carried)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = self.layout.quarantined(digest, stamp).name
        with contextlib.suppress(FileNotFoundError):
            quarantine.move_in(self.path(digest), self.layout.quarantine, name)

    def _write_meta(self, digest: Digest, meta: BlobMeta) -> None:
        path = self.layout.blob_meta(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The file is fsynced but not its directory (as before): publishing fsyncs the
        # blob's directory right after, which commits the journal holding this rename
        # too, and a directory fsync per commit would slow small blobs by ~15%.
        # Never longer than it is read back (EFBIG: ResourceExhausted for the caller).
        write_json(path, meta_to_json(meta), sync=self.fsync, sync_dir=False, limit=MAX_META_FILE)


__all__ = [
    "HASH_CHUNK",
    "META_XATTR",
    "Blobs",
    "FileReaderAt",
    "Publisher",
    "check_attributes_readable",
    "hash_fd",
    "hash_path",
    "read_blob_meta",
    "read_file_meta",
    "read_meta",
]
