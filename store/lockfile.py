"""Exclusive lock files that the kernel releases when their holder dies.

A lock is an open file description holding a whole-file write lock on ``path``. On Linux
it is an OFD lock (``F_OFD_SETLK``), which another process can *test* without taking it
(``F_OFD_GETLK``), so watching who holds a lock never makes a writer fail. Elsewhere it
falls back to ``flock``, where a test has to take a shared lock for a moment.

The holder may store a short text (its :class:`store.values.Holder` as JSON) in the file.
Releasing unlinks the file before unlocking, so lock files do not pile up; an acquirer
that locked a file which was unlinked meanwhile notices (the path no longer names its
inode) and starts over on the new file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from ingestq.store.ownfiles import NOT_OWN, names_file, open_own

#: Whether OFD locks are available (Linux >= 3.15).
HAVE_OFD = all(hasattr(fcntl, n) for n in ("F_OFD_SETLK", "F_OFD_SETLKW", "F_OFD_GETLK"))

# struct flock on LP64 Linux: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid, padded to 8 bytes.
_FLOCK = struct.Struct("hhqqi0q")
_MAX_HOLDER_TEXT = 64 * 1024


@dataclass(frozen=True)
class Probe:
    """What a look at a lock file found: whether it is held, the holder's text and the
    file's modification time in nanoseconds (0 if there is no file)."""

    held: bool
    text: str
    mtime_ns: int


class LockFile:
    """One exclusive lock file. ``use_ofd=False`` forces the ``flock`` fallback."""

    def __init__(self, path: Path, *, use_ofd: bool = HAVE_OFD) -> None:
        self.path = path
        self._ofd = use_ofd and HAVE_OFD
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, *, blocking: bool) -> bool:
        """Take the lock; False if ``blocking`` is off and another holder has it.

        Raises OSError when the file cannot be created or locked for another reason.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this object")
        planted = 0
        while True:
            try:
                fd = open_own(self.path, os.O_RDWR | os.O_CREAT)
            except OSError as e:
                # Not a regular file (a symlink, FIFO or directory planted here): never
                # written through; it is removed and a lock file made in its place.
                if e.errno not in _PLANTED or planted >= _PLANTED_MAX:
                    raise
                planted += 1
                _remove_planted(self.path)
                continue
            try:
                if not self._lock(fd, blocking):
                    os.close(fd)
                    return False
                if self._names_inode(fd):
                    self._fd = fd
                    return True
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # the file was unlinked by its previous holder: lock the new one

    def write_text(self, text: str) -> None:
        """Store ``text`` in the held lock file for :func:`probe` readers."""
        fd = self._require()
        data = text.encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def release(self) -> None:
        """Unlink the file and unlock. Releasing an unheld lock does nothing."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # While we hold the lock, nobody else holds this inode, so the path is ours
            # (checked all the same: never unlink a file that is not the one we hold).
            # A file we cannot remove is harmless: the next holder reuses it.
            if self._names_inode(fd):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _require(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"{self.path} is not held")
        return self._fd

    def _lock(self, fd: int, blocking: bool) -> bool:
        if self._ofd:
            cmd = fcntl.F_OFD_SETLKW if blocking else fcntl.F_OFD_SETLK
            try:
                fcntl.fcntl(fd, cmd, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
            except OSError as e:
                if not blocking and e.errno in _BUSY:
                    return False
                raise
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if not blocking and e.errno in _BUSY:
                return False
            raise
        return True

    def _names_inode(self, fd: int) -> bool:
        return names_file(self.path, fd)


#: Planted entries removed in a row before acquire gives up (someone keeps planting).
_PLANTED_MAX = 3
#: What opening a lock file says when something else lies at its path (a directory
#: answers EISDIR to O_RDWR|O_CREAT).
_PLANTED = (*NOT_OWN, errno.EISDIR)


def _remove_planted(path: Path) -> None:
    """Remove what was planted at ``path`` (a symlink, FIFO, device or empty
    directory), under an exclusive lock on the directory: every remover checks again
    under it, so a regular file (a lock file another process has made meanwhile, and
    may hold) is never removed. Raises OSError (a non-empty directory: ENOTEMPTY)."""
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISREG(mode):
            return
        if stat.S_ISDIR(mode):
            os.rmdir(path)
        else:
            os.unlink(path)
    finally:
        os.close(directory)  # and the directory lock with it


#: errnos meaning "another holder has it" for a non-blocking lock attempt.
_BUSY = frozenset({errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK})


def probe(path: Path, *, use_ofd: bool = HAVE_OFD) -> Probe:
    """Whether ``path`` is locked by anyone (this process included), without taking it
    (with OFD locks; the flock fallback takes a shared lock for a moment)."""
    try:
        fd = open_own(path, os.O_RDONLY)
    except FileNotFoundError:
        return Probe(False, "", 0)
    except OSError as e:
        if e.errno in NOT_OWN:  # planted, not a lock file: nobody holds a lock on it
            return Probe(False, "", 0)
        raise
    try:
        if use_ofd and HAVE_OFD:
            arg = _FLOCK.pack(fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0)
            ltype = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_OFD_GETLK, arg))[0]
            held = ltype != fcntl.F_UNLCK
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in _BUSY:
                    raise
                held = True
            else:
                held = False
        if not held:
            return Probe(False, "", 0)
        text = os.pread(fd, _MAX_HOLDER_TEXT, 0).decode("utf-8", "replace")
        return Probe(True, text, os.fstat(fd).st_mtime_ns)
    finally:
        os.close(fd)
