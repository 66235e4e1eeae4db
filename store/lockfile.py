"""Exclusive lock files that the kernel releases when their holder dies.

A lock is an open file description holding a whole-file write lock on ``path``. On Linux
it is an OFD lock (``F_OFD_SETLK``), which another process can *test* without taking it
(``F_OFD_GETLK``), so watching who holds a lock never makes a writer fail. Elsewhere it
falls back to ``flock``, where a test has to take a shared lock for a moment.

The holder may store a short text (its :class:`store.values.Holder` as JSON) in the file.
Releasing unlinks the file before unlocking, so lock files do not pile up; an acquirer
that locked a file which was unlinked meanwhile notices (the path no longer names its
inode) and starts over on the new file.

The store's operations wait for a lock file for at most ``INGESTQ_LOCK_FILE_WAIT`` seconds
(:func:`held`): a holder that never lets go (a stopped process, a lock file someone
keeps locked on purpose) makes them Unavailable, which callers retry, instead of
hanging them.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import stat
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ingestq import errdefs
from ingestq.store.oserrors import from_os_error
from ingestq.store.ownfiles import NOT_OWN, names_file, open_own

#: Whether OFD locks are available (Linux >= 3.15).
HAVE_OFD = all(hasattr(fcntl, n) for n in ("F_OFD_SETLK", "F_OFD_SETLKW", "F_OFD_GETLK"))

# struct flock on LP64 Linux: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid, padded to 8 bytes.
_FLOCK = struct.Struct("hhqqi0q")
_MAX_HOLDER_TEXT = 64 * 1024

#: The environment variable bounding a store operation's wait for one lock file.
LOCK_WAIT_ENV = "INGESTQ_LOCK_FILE_WAIT"
#: Seconds a store operation waits for a lock file by default. Locks are held for one
#: metadata edit, one rename or one gc batch: far less than this.
DEFAULT_LOCK_WAIT = 120.0
#: The first and the longest pause between two tries of a held lock, seconds.
_POLL_FIRST, _POLL_MAX = 0.001, 0.02


def lock_wait(env: Mapping[str, str] = os.environ) -> float:
    """Seconds from ``INGESTQ_LOCK_FILE_WAIT`` (absent or empty: :data:`DEFAULT_LOCK_WAIT`).
    InvalidArgument unless it is a finite number above 0."""
    text = env.get(LOCK_WAIT_ENV, "").strip()
    if not text:
        return DEFAULT_LOCK_WAIT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise errdefs.InvalidArgument(f"{LOCK_WAIT_ENV}={text!r}: not a number of seconds above 0")
    return seconds


def _until(deadline: float, attempt: Callable[[], bool]) -> bool:
    """Call ``attempt`` (a non-blocking try) until it succeeds or the monotonic clock
    passes ``deadline``, pausing a little longer each time; whether it succeeded."""
    pause = _POLL_FIRST
    while not attempt():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, _POLL_MAX)
    return True


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

    def acquire(self, *, blocking: bool, deadline: float | None = None) -> bool:
        """Take the lock; False if ``blocking`` is off and another holder has it.
        Clearing a non-file planted at the path waits for the lock directory until the
        monotonic ``deadline`` (default: :func:`lock_wait` seconds from now).

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
                _remove_planted(
                    self.path, time.monotonic() + lock_wait() if deadline is None else deadline
                )
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

    def acquire_within(self, seconds: float) -> bool:
        """Take the lock, waiting at most ``seconds`` for another holder to let go;
        False if it still holds it then. Raises OSError as :meth:`acquire` does."""
        return self.acquire_until(time.monotonic() + seconds)

    def acquire_until(self, deadline: float) -> bool:
        """Take the lock, waiting for another holder until the monotonic clock passes
        ``deadline``; False if it still holds it then. Raises OSError as :meth:`acquire`
        does."""
        return _until(deadline, lambda: self.acquire(blocking=False, deadline=deadline))

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


def _remove_planted(path: Path, deadline: float) -> None:
    """Remove what was planted at ``path`` (a symlink, FIFO, device or empty
    directory), under an exclusive lock on the directory: every remover checks again
    under it, so a regular file (a lock file another process has made meanwhile, and
    may hold) is never removed. Raises OSError (a non-empty directory: ENOTEMPTY; the
    directory's lock still held by another at the monotonic ``deadline``:
    EWOULDBLOCK)."""
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:

        def attempt() -> bool:
            try:
                fcntl.flock(directory, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in _BUSY:
                    raise
                return False
            return True

        if not _until(deadline, attempt):
            busy = f"{path.parent} held by another process for longer than the lock wait"
            raise OSError(errno.EWOULDBLOCK, busy, str(path.parent))
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


@contextmanager
def held(*paths: Path, what: str, wait: float | None = None) -> Iterator[None]:
    """Hold the lock files ``paths``, taken in this order, for the ``with`` body,
    waiting at most ``wait`` seconds for all of them together (:func:`lock_wait` by
    default). Unavailable naming the lock file another holder keeps that long; the OS
    error's own kind (PermissionDenied, ResourceExhausted, ...) when one cannot be made
    or locked; ``what`` starts either message. Errors of the body pass through
    unchanged."""
    seconds = lock_wait() if wait is None else wait
    deadline = time.monotonic() + seconds
    with ExitStack() as stack:
        for path in paths:
            lock = LockFile(path)
            try:
                taken = lock.acquire_until(deadline)
            except OSError as e:
                raise from_os_error(e, what) from e
            if not taken:
                raise errdefs.Unavailable(
                    f"{what}: {path} held by another process for more than {seconds:g}s",
                    {"lock": str(path)},
                )
            stack.callback(lock.release)
        yield


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
