"""One ingest directory, ``<root>/ingest/<sha256(ref)>/`` (see :mod:`store.layout`), and
how to read its Status.

Files:

``ref``
    the ref (written last when the ingest starts, so a directory without it is
    incomplete and is started over);
``startedat``, ``total``, ``expected``
    when the ingest started, the expected size (absent = unknown) and digest;
``current``
    the id of the data file that holds the ingest's bytes;
``data.<id>``
    a data file that its writer may still be writing;
``sealed.<id>``
    a data file whose writer closed it for good (renamed from ``data.<id>`` after the
    writer closed its descriptor).

An ingest's files are the store's own, but anyone who can write in the directory could
plant a symlink, a FIFO or a huge file under one of these names: they are opened without
following symlinks and without waiting on a FIFO, only regular files count, and a
metadata file is read up to :data:`SMALL_FILE_MAX` bytes (anything else reads as
absent or damaged, never as another file's bytes).

Every data file has one writer at a time, and changes hands only in a way that no other
writer can touch its bytes afterwards: a sealed file is claimed by renaming it to the
new writer's ``data.<id>`` (rename is atomic, so exactly one claimant wins); a file that
is not sealed may still have a live writer (a lease that expired under a paused
process), so a new writer copies the prefix it adopts into a file of its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ingestq import errdefs
from ingestq.store.atomic import write_text
from ingestq.store.digest import Digest
from ingestq.store.layout import ref_key
from ingestq.store.ownfiles import (
    NOT_OWN,
    is_regular,
    make_own_dir,
    open_own,
    open_own_dir,
    remove_tree,
)
from ingestq.store.values import Holder, Status

DATA_PREFIX = "data."
SEALED_PREFIX = "sealed."
_ID = re.compile(r"[0-9a-f]{32}")
#: The most of a metadata file (``ref``, ``total``, ...) that is read: a longer one is
#: damaged (a ref is at most a few KiB).
SMALL_FILE_MAX = 64 * 1024


def new_data_id() -> str:
    """A fresh data-file id."""
    return uuid.uuid4().hex


#: What opening a metadata file can say when it is missing or planted (not a regular
#: file: EINVAL from open_own, ELOOP for a symlink, ENXIO for a socket): it reads as
#: absent. Anything else (EIO, EMFILE, EACCES, ...) is raised: a transient error must
#: not make a resumable ingest look incomplete, which would start it over.
_ABSENT = (errno.ENOENT, errno.ENOTDIR, *NOT_OWN)


def _read(path: Path) -> str | None:
    """The text of a metadata file; None if it is missing, not a regular file or longer
    than :data:`SMALL_FILE_MAX` bytes. Raises OSError for other errors."""
    try:
        fd = open_own(path, os.O_RDONLY)
    except OSError as e:
        if e.errno in _ABSENT:
            return None
        raise
    try:
        data = os.read(fd, SMALL_FILE_MAX + 1)
    finally:
        os.close(fd)
    if len(data) > SMALL_FILE_MAX:
        return None
    return data.decode("utf-8", errors="surrogatepass")


def _ts(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


@dataclass(frozen=True)
class DataFile:
    """One data file of an ingest: its path, id, whether its writer sealed it, and
    whether it is a regular file (anything else was planted: never read, only removed)."""

    path: Path
    id: str
    sealed: bool
    regular: bool = True

    def remove(self) -> None:
        """Remove it, whatever it is (a planted one best effort). Raises OSError for a
        regular file that cannot be unlinked."""
        remove_tree(self.path, strict=self.regular)


@dataclass(frozen=True)
class IngestDir:
    """Paths and reads for one ingest directory.

    Writers change it only while holding the ref lock (and stay correct without it);
    readers tolerate files vanishing or being renamed under them. A writer works in a
    :meth:`held` directory, so that nothing it writes can land elsewhere.
    """

    #: The directory's name in the store (``<root>/ingest/<sha256(ref)>``).
    path: Path
    #: Where its files are reached when that is not ``path``: the directory a writer
    #: holds open (``/proc/self/fd/N``), see :meth:`held`.
    through: Path | None = None

    @property
    def _files(self) -> Path:
        return self.through or self.path

    def held(self) -> tuple[IngestDir, int]:
        """Open the directory and reach its files through that descriptor from now on:
        returns that IngestDir and the descriptor, which the caller closes.

        Someone who can write in ``ingest/`` could rename the directory away and put a
        symlink to any other directory at its name, between a writer's check and its
        writes; through the descriptor the writer still writes in the directory it
        checked (wherever it was moved), never in the symlink's target. Where
        ``/proc/self/fd`` is not mounted, files are reached by ``path`` as before.
        Raises OSError: FileNotFoundError if it is gone, or if a symlink or file is at its
        name (replaced since it was checked: the caller starts over).
        """
        try:
            fd = open_own_dir(self.path)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise FileNotFoundError(
                errno.ENOENT, "ingest directory replaced concurrently", str(self.path)
            ) from None
        through = Path(f"/proc/self/fd/{fd}")
        try:
            by_fd = os.path.samestat(os.fstat(fd), os.stat(through))
        except OSError:
            by_fd = False  # no usable /proc
        except BaseException:
            os.close(fd)
            raise
        if not by_fd:
            return self, fd  # by name; the descriptor only keeps the directory alive
        return IngestDir(self.path, through), fd

    @property
    def ref_file(self) -> Path:
        """The file holding the ingest's ref."""
        return self._files / "ref"

    def data_path(self, ident: str) -> Path:
        """The path of the unsealed data file ``ident``."""
        return self._files / f"{DATA_PREFIX}{ident}"

    def sealed_path(self, ident: str) -> Path:
        """The path of the sealed data file ``ident``."""
        return self._files / f"{SEALED_PREFIX}{ident}"

    def _write(self, name: str, text: str) -> None:
        # Not fsynced: an ingest's small files are rewritten on the next open if a crash
        # loses them (a directory without ``ref`` starts over), and the data file is
        # what commit makes durable. Syncing them would cost every ingest a few fsyncs.
        write_text(self._files / name, text, sync=False)

    def begin(self, ref: str, started_at: datetime, total: int, expected: Digest | None) -> None:
        """Record a new ingest: its start time, total (if > 0) and expected digest (if
        any), then the ref last, which makes the directory complete. Raises OSError."""
        self._write("startedat", started_at.isoformat())
        if total > 0:
            self.set_total(total)
        if expected is not None:
            self.set_expected(expected)
        self._write("ref", ref)

    def set_total(self, total: int) -> None:
        """Record the expected total size. Raises OSError."""
        self._write("total", str(total))

    def set_expected(self, expected: Digest) -> None:
        """Record the expected digest. Raises OSError."""
        self._write("expected", str(expected))

    def read_ref(self) -> str | None:
        """The stored ref, or None if the directory is incomplete or gone: no ``ref``,
        or one that does not name this directory (empty or zero-filled, as a power cut
        can leave it since it is written without fsync; or planted), or a directory
        that is not a real one (a symlink). Raises OSError for other errors."""
        if self.through is None and not self._is_dir():
            return None
        ref = _read(self.ref_file)
        if not ref or ref_key(ref) != self.path.name:
            return None
        return ref

    def _is_dir(self) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(self.path).st_mode)
        except FileNotFoundError:
            return False

    def exists(self) -> bool:
        """Whether the directory exists (a real directory, not a symlink)."""
        return self._is_dir()

    def create(self) -> bool:
        """Create the directory (and its parents); True if this call created it, False
        if it was there. Raises OSError."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Removed again meanwhile by a writer the lock did not exclude: FileNotFoundError,
        # and the caller starts over, as for any ingest that vanished under it. A planted
        # symlink or file is no ingest: replaced.
        return make_own_dir(self.path)

    def remove(self) -> None:
        """Remove the ingest (best effort; also a directory a writer made and failed to
        start, so that a full disk midway leaves no empty ingest behind). A held
        directory is removed by its name only while that name is still it; otherwise
        (renamed away, something else put at its name) only what it holds is removed,
        and the name is left alone."""
        if self.through is not None:
            try:
                same = os.path.samestat(os.lstat(self.path), os.stat(self.through))
            except OSError:
                same = False
            if not same:
                with contextlib.suppress(OSError):
                    for name in os.listdir(self.through):
                        remove_tree(self.through / name)
                return
        remove_tree(self.path)

    def data_files(self) -> list[DataFile]:
        """Every data file present, sealed or not (those that are not regular files
        flagged so)."""
        try:
            names = os.listdir(self._files)
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for name in names:
            for prefix, sealed in ((DATA_PREFIX, False), (SEALED_PREFIX, True)):
                ident = name[len(prefix) :]
                if name.startswith(prefix) and _ID.fullmatch(ident):
                    path = self._files / name
                    out.append(DataFile(path, ident, sealed, is_regular(path)))
        return out

    def current(self) -> DataFile | None:
        """The data file holding the ingest's bytes, or None; always a regular file.

        That is the file ``current`` names; if it is missing (a writer crashed between
        claiming a file and recording it), the only data file present, if there is one.
        """
        ident = (_read(self._files / "current") or "").strip()
        if _ID.fullmatch(ident):
            for path, sealed in ((self.data_path(ident), False), (self.sealed_path(ident), True)):
                if is_regular(path):
                    return DataFile(path, ident, sealed)
        files = [f for f in self.data_files() if f.regular]
        return files[0] if len(files) == 1 else None

    def set_current(self, ident: str) -> None:
        """Record ``ident`` as the current data file. Raises OSError."""
        self._write("current", ident)

    def total(self) -> int:
        """The expected total size, 0 if unknown."""
        try:
            return max(int(_read(self._files / "total") or 0), 0)
        except ValueError:
            return 0

    def expected(self) -> Digest | None:
        """The expected digest recorded for the ingest, if any."""
        text = _read(self._files / "expected")
        if not text:
            return None
        try:
            return Digest.parse(text.strip())
        except errdefs.InvalidArgument:
            return None

    def started_at(self) -> datetime | None:
        """When the ingest started, if recorded."""
        return _ts(_read(self._files / "startedat"))

    def status(self, ref: str, holder: Holder | None) -> Status:
        """Read the Status from disk. NotFound if the ingest does not exist (or vanished)."""
        stored = self.read_ref()
        if stored is None or stored != ref:
            raise errdefs.NotFound(f"reference {ref}")
        offset = 0
        updated: datetime | None = None
        for _ in range(3):  # the current file can be renamed under us by a new writer
            data = self.current()
            if data is None:
                break
            try:
                st = os.lstat(data.path)
            except FileNotFoundError:
                continue
            offset = st.st_size
            updated = datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)
            break
        started = self.started_at()
        if started is None:
            try:
                started = datetime.fromtimestamp(os.lstat(self.ref_file).st_mtime_ns / 1e9, UTC)
            except FileNotFoundError:
                raise errdefs.NotFound(f"reference {ref}") from None
        if updated is None or updated < started:
            updated = started
        return Status(
            ref=ref,
            offset=offset,
            total=self.total(),
            started_at=started,
            updated_at=updated,
            expected=self.expected(),
            holder=holder,
        )
