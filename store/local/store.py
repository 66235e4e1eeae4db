"""The local filesystem store, with containerd's semantics and error kinds.

Layout under the root (which is also an OCI image layout)::

    oci-layout, index.json       the OCI image layout (see store.ocilayout)
    blobs/<alg>/<hex>            committed blobs, read-only
    meta/<alg>/<hex>.json        created_at, updated_at and labels of each blob
    ingest/<sha256(ref)>/        one directory per ingest (see store.local.ingest)
    locks/<sha256(ref)>.lock     host-local ref locks (flock) and their holders
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import filelock

import errdefs
from store import filters as filterlang
from store import labels as labelrules
from store.digest import ALGORITHMS, Digest
from store.local.blobs import FileReaderAt, meta_to_json, read_info
from store.local.ingest import DATA_PREFIX, IngestDir, write_atomic
from store.local.writer import LocalWriter, adopt_prefix, fsync_dir, remove_tree, ts_now_text
from store.locks import ChainLocker, FileRefLocker, Lease, RefLocker, new_holder_id, ref_key
from store.ocilayout import ensure_layout
from store.oserrors import from_os_error
from store.values import Descriptor, Info, Status, utcnow

MAX_REF_BYTES = 4096


def validate_ref(ref: str) -> None:
    """Raise InvalidArgument for an empty ref, a ref over 4096 bytes, or one holding NUL
    or other control characters. Any other string is a valid ref (it is hashed for paths)."""
    if not isinstance(ref, str) or not ref:
        raise errdefs.InvalidArgument("ref must not be empty")
    try:
        size = len(ref.encode("utf-8"))
    except UnicodeEncodeError:
        raise errdefs.InvalidArgument("ref must be valid UTF-8") from None
    if size > MAX_REF_BYTES:
        raise errdefs.InvalidArgument(
            f"ref {ref[:32]}... is {size} bytes, longer than {MAX_REF_BYTES}"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in ref):
        raise errdefs.InvalidArgument(f"ref {ref!r} contains control characters")


class LocalStore:
    """A :class:`store.protocols.Store` on a local (or shared) filesystem.

    ``lockers`` are taken after the host-local file lock for every write (e.g. a Redis
    lease for many hosts). ``fsync=False`` skips durability syncs (tests only).
    """

    def __init__(
        self, root: str | os.PathLike[str], lockers: Sequence[RefLocker] = (), *, fsync: bool = True
    ) -> None:
        self.root = Path(root).absolute()
        self.fsync = fsync
        for sub in ("blobs", "ingest", "locks", "meta"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        ensure_layout(self.root)
        self.file_locker = FileRefLocker(self.root / "locks")
        self.locker: RefLocker = (
            ChainLocker([self.file_locker, *lockers]) if lockers else self.file_locker
        )
        self._meta_mutex = threading.Lock()

    # paths ---------------------------------------------------------------------------
    def blob_path(self, digest: Digest) -> Path:
        """Where a committed blob lives."""
        return self.root / "blobs" / digest.algorithm / digest.encoded

    def _meta_path(self, digest: Digest) -> Path:
        return self.root / "meta" / digest.algorithm / f"{digest.encoded}.json"

    def _ingest(self, ref: str) -> IngestDir:
        return IngestDir(self.root / "ingest" / ref_key(ref))

    def exists(self, digest: Digest) -> bool:
        """Whether ``digest`` is committed."""
        return self.blob_path(digest).exists()

    # Provider --------------------------------------------------------------------------
    def reader_at(self, desc: Descriptor | Digest) -> FileReaderAt:
        digest = desc.digest if isinstance(desc, Descriptor) else Digest.parse(desc)
        return FileReaderAt(self.blob_path(digest), digest)

    # Ingester --------------------------------------------------------------------------
    def writer(self, ref: str, expected: Descriptor | None = None) -> LocalWriter:
        validate_ref(ref)
        total = expected.size if expected is not None and expected.size > 0 else 0
        digest = expected.digest if expected is not None else None
        if digest is not None and self.exists(digest):
            raise errdefs.AlreadyExists(f"content {digest}")
        holder_id = new_holder_id()
        lease = self.locker.try_lock(ref, holder_id)
        try:
            if digest is not None and self.exists(digest):
                raise errdefs.AlreadyExists(f"content {digest}")
            return self._open_writer(ref, total, digest, lease, holder_id)
        except BaseException:
            lease.release()
            raise

    def _open_writer(
        self, ref: str, total: int, expected: Digest | None, lease: Lease, holder_id: str
    ) -> LocalWriter:
        ingest = self._ingest(ref)
        try:
            ingest.path.mkdir(exist_ok=True)
            stored_ref = ingest.read_ref()
            if stored_ref is not None and stored_ref != ref:
                raise errdefs.FailedPrecondition(
                    f"ref key does not match: {stored_ref!r} != {ref!r}"
                )
            if stored_ref is None:
                write_atomic(ingest.path / "startedat", ts_now_text())
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
                    )
                if total > 0 and stored_total == 0:
                    write_atomic(ingest.path / "total", str(total))
                if expected is not None:
                    write_atomic(ingest.path / "expected", str(expected))
            previous = ingest.current_data()
            data = ingest.path / f"{DATA_PREFIX}{uuid.uuid4().hex}"
            fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                hasher, offset = adopt_prefix(previous, fd)
                write_atomic(ingest.path / "current", data.name)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    data.unlink()
                raise
            for leftover in ingest.data_files():
                if leftover != data:
                    with contextlib.suppress(OSError):
                        leftover.unlink()
            started = ingest.started_at() or utcnow()
            total = total or ingest.total()
        except OSError as e:
            raise from_os_error(e, f"open ingest {ref}") from e
        return LocalWriter(
            self, ref, ingest, lease, data, fd, hasher, offset, total,
            expected or ingest.expected(), started,
        )

    def _publish(
        self, ref: str, ingest: IngestDir, data: Path, digest: Digest, labels: dict[str, str]
    ) -> Info:
        blob = self.blob_path(digest)
        meta = self._meta_path(digest)
        try:
            blob.parent.mkdir(parents=True, exist_ok=True)
            meta.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(data, 0o444)
            now = utcnow()
            try:
                os.link(data, blob)
            except FileExistsError:
                remove_tree(ingest.path)
                raise errdefs.AlreadyExists(f"content {digest}") from None
            except FileNotFoundError:
                raise errdefs.FailedPrecondition(
                    f"ingest {ref} was aborted or taken over by another writer"
                ) from None
            if self.fsync:
                fsync_dir(blob.parent)
            with self._meta_lock():
                write_atomic(meta, meta_to_json(now, now, labels), sync=self.fsync)
            remove_tree(ingest.path)
        except OSError as e:
            raise from_os_error(e, f"commit {ref}") from e
        return read_info(blob, meta, digest)

    # IngestManager ---------------------------------------------------------------------
    def status(self, ref: str) -> Status:
        validate_ref(ref)
        return self._ingest(ref).status(ref, self.locker.holder(ref))

    def list_statuses(self, *filters: str) -> list[Status]:
        flt = filterlang.parse(*filters)
        out: list[Status] = []
        try:
            entries = sorted((self.root / "ingest").iterdir())
        except FileNotFoundError:
            return out
        for path in entries:
            ingest = IngestDir(path)
            ref = ingest.read_ref()
            if ref is None:
                continue
            if not flt.match(lambda fp, r=ref: r if tuple(fp) == ("ref",) else None):
                continue
            try:
                out.append(ingest.status(ref, self.locker.holder(ref)))
            except errdefs.NotFound:
                continue
        return out

    def abort(self, ref: str) -> None:
        validate_ref(ref)
        ingest = self._ingest(ref)
        if ingest.read_ref() != ref:
            raise errdefs.NotFound(f"reference {ref}")
        remove_tree(ingest.path)

    # Manager ---------------------------------------------------------------------------
    def info(self, digest: Digest) -> Info:
        digest = Digest.parse(digest)
        return read_info(self.blob_path(digest), self._meta_path(digest), digest)

    def update(self, info: Info, *fieldpaths: str) -> Info:
        digest = Digest.parse(info.digest)
        blob, meta = self.blob_path(digest), self._meta_path(digest)
        with self._meta_lock():
            current = read_info(blob, meta, digest)
            new_labels = labelrules.apply_update(
                current.labels, info.labels, tuple(fieldpaths), str(digest)
            )
            try:
                write_atomic(meta, meta_to_json(current.created_at, utcnow(), new_labels))
            except OSError as e:
                raise from_os_error(e, f"update {digest}") from e
            return read_info(blob, meta, digest)

    def walk(self, *filters: str) -> Iterator[Info]:
        flt = filterlang.parse(*filters)
        return self._walk(flt)

    def _walk(self, flt: filterlang.Filter) -> Iterator[Info]:
        for alg in sorted(ALGORITHMS):
            directory = self.root / "blobs" / alg
            try:
                names = sorted(os.listdir(directory))
            except FileNotFoundError:
                continue
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

    def delete(self, digest: Digest) -> None:
        digest = Digest.parse(digest)
        blob = self.blob_path(digest)
        try:
            blob.unlink()
        except FileNotFoundError:
            raise errdefs.NotFound(f"content digest {digest}") from None
        except OSError as e:
            raise from_os_error(e, f"delete {digest}") from e
        with contextlib.suppress(FileNotFoundError):
            self._meta_path(digest).unlink()

    @contextlib.contextmanager
    def _meta_lock(self) -> Iterator[None]:
        with self._meta_mutex, filelock.FileLock(self.root / "locks" / "meta.lock"):
            yield


def _info_adaptor(info: Info) -> filterlang.Adaptor:
    def lookup(fieldpath: Sequence[str]) -> str | None:
        if not fieldpath:
            return None
        if fieldpath[0] == "digest" and len(fieldpath) == 1:
            return str(info.digest)
        if fieldpath[0] == "labels" and len(fieldpath) > 1:
            return info.labels.get(".".join(fieldpath[1:]))
        return None

    return lookup


def labels_of(mapping: Mapping[str, str] | None) -> dict[str, str]:
    """A plain dict copy of a label mapping (None → empty)."""
    return dict(mapping or {})
