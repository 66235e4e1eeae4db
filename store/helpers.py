"""Algorithms written against the store protocols (containerd's content helpers):
:func:`open_writer`, :func:`copy`, :func:`write_blob`, :func:`read_blob`."""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable, Mapping
from typing import IO, Protocol

from ingestq import errdefs
from ingestq.store.digest import Digest
from ingestq.store.protocols import Ingester, Manager, Provider, Putter, Writer
from ingestq.store.values import Descriptor, Info

COPY_CHUNK = 1 << 20


class Backoff:
    """Capped exponential backoff with full jitter: each delay is uniform in [0, bound),
    the bound doubling from ``first`` up to ``cap`` seconds (containerd: 16 ms .. 2048 ms).
    ``rng`` is the random source (for tests)."""

    def __init__(
        self, first: float = 0.016, cap: float = 2.048, *, rng: random.Random | None = None
    ) -> None:
        if first <= 0 or cap < first:
            raise errdefs.InvalidArgument(f"backoff needs 0 < first <= cap, got {first}, {cap}")
        self._bound = first
        self._cap = cap
        self._rng = rng or random.Random()

    @property
    def bound(self) -> float:
        """The current upper bound of the next delay."""
        return self._bound

    def next_delay(self) -> float:
        """The next delay in seconds; then the bound doubles (up to the cap)."""
        delay = self._rng.uniform(0, self._bound)
        self._bound = min(self._bound * 2, self._cap)
        return delay


def open_writer(
    ingester: Ingester,
    ref: str,
    expected: Descriptor | None = None,
    *,
    timeout: float | None = None,
    backoff: Backoff | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_wait: Callable[[errdefs.Unavailable], None] | None = None,
) -> Writer:
    """Open a writer, waiting while the ref is locked (Unavailable) until it is free.

    A client waits until the ref is unlocked or the expected content exists: AlreadyExists
    is raised as soon as it does (callers treat it as success), and any other error at
    once. With ``timeout`` (seconds), the last Unavailable is raised once it has passed;
    the last attempt is made at the deadline. ``on_wait`` sees each lock error before the
    wait. ``sleep`` and ``clock`` are injectable for tests.
    """
    backoff = backoff or Backoff()
    deadline = None if timeout is None else clock() + timeout
    while True:
        try:
            return ingester.writer(ref, expected)
        except errdefs.Unavailable as e:
            delay = backoff.next_delay()
            if deadline is not None:
                remaining = deadline - clock()
                if remaining <= 0:
                    raise
                delay = min(delay, remaining)
            if on_wait is not None:
                on_wait(e)
            sleep(delay)


class Readable(Protocol):
    """The least a copy source offers: ``read(n)``."""

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes; empty at the end."""
        ...


Source = IO[bytes] | Readable


def seek_source(source: Source, offset: int, *, discard: bool = True) -> bool:
    """Position ``source`` (at 0) at ``offset`` for a resume.

    A seekable source is seeked (a failed seek is FailedPrecondition, as in containerd);
    otherwise ``offset`` bytes are read and discarded when ``discard`` is allowed. Returns
    False when the source cannot be positioned and the caller must restart from 0.
    DataLoss when the source ends before ``offset``.
    """
    seekable = getattr(source, "seekable", None)
    if callable(seekable) and seekable():
        try:
            pos = source.seek(offset)  # type: ignore[union-attr]
        except OSError as e:
            raise errdefs.FailedPrecondition(f"failed to seek to offset {offset}: {e}") from e
        if pos != offset:
            raise errdefs.FailedPrecondition(
                f"failed to seek to offset {offset}: unexpected seek location {pos}"
            )
        return True
    if not discard:
        return False
    left = offset
    while left > 0:
        chunk = source.read(min(left, COPY_CHUNK))
        if not chunk:
            raise errdefs.DataLoss(
                f"unable to discard to offset {offset}: source ended {left} bytes early"
            )
        left -= len(chunk)
    return True


def copy(
    writer: Writer,
    source: Source,
    size: int = 0,
    expected: Digest | None = None,
    labels: Mapping[str, str] | None = None,
    *,
    discard: bool = True,
    on_progress: Callable[[int], None] | None = None,
) -> Info | None:
    """Copy ``source`` (positioned at 0) into ``writer`` from the writer's stored offset,
    then commit with ``size``, ``expected`` and ``labels``.

    Resumes by seeking the source, else (if ``discard``) reading and discarding up to
    the offset, else truncating the writer and restarting from 0; an ingest already
    longer than ``size`` is restarted. A source that ends before ``size`` is DataLoss; a
    source longer than ``size`` is FailedPrecondition (nothing past ``size`` is
    written). Returns the Info, or None when the content already existed (AlreadyExists
    counts as success). Commit errors keep their kind, reading
    ``failed commit on ref "<ref>": ...``. ``on_progress`` sees the offset after each
    write. The writer is left open on error (close it; commit closes it otherwise).
    """
    status = writer.status()
    ref = status.ref
    offset = status.offset
    if size and offset > size:
        writer.truncate(0)
        offset = 0
    if offset > 0 and not seek_source(source, offset, discard=discard):
        writer.truncate(0)
        offset = 0
    written = offset
    readinto = getattr(source, "readinto", None)
    buf = bytearray(COPY_CHUNK) if callable(readinto) else None
    while True:
        want = COPY_CHUNK if not size else min(COPY_CHUNK, size - written + 1)
        if buf is not None and callable(readinto):
            n = readinto(memoryview(buf)[:want])
            chunk: bytes | memoryview = memoryview(buf)[: n or 0]
        else:
            chunk = source.read(want)
        if not chunk:
            break
        if size and written + len(chunk) > size:
            raise longer_than(ref, size)
        writer.write(chunk)
        written += len(chunk)
        if on_progress is not None:
            on_progress(written)
    return finish_copy(writer, ref, written, size, expected, labels)


def put_through_writer(
    store: Ingester,
    ref: str,
    desc: Descriptor,
    data: bytes | bytearray | memoryview,
    labels: Mapping[str, str] | None = None,
) -> Info:
    """Commit ``data``, already checked to be ``desc``, through ``store.writer(ref,
    desc)``, resuming ``ref``'s unfinished ingest: a store's ``put`` for content that
    does not take its one-request path. If the adopted prefix was other bytes (a writer
    fed a lying source, or writers forced onto one ref without the lock), the commit
    fails and closes its writer; ``data`` holds every byte, so the ingest is started
    over once with a new writer. AlreadyExists when the content is committed; the
    writer's errors otherwise."""
    digest = Digest.parse(desc.digest)

    def attempt(restart: bool) -> Info | None:
        with store.writer(ref, desc) as w:
            if restart:
                w.truncate(0)
            return copy(w, io.BytesIO(data), desc.size, digest, labels)

    try:
        info = attempt(restart=False)
    except errdefs.FailedPrecondition:
        info = attempt(restart=True)
    if info is None:
        raise errdefs.AlreadyExists(f"content {digest}")
    return info


def longer_than(ref: str, size: int) -> errdefs.FailedPrecondition:
    """The error of a source that holds more than the expected ``size`` bytes."""
    return errdefs.FailedPrecondition(f"source for {ref} is longer than the expected {size} bytes")


def shorter_than(ref: str, written: int, size: int) -> errdefs.DataLoss:
    """The error of a source that ended after ``written`` of the expected ``size`` bytes."""
    return errdefs.DataLoss(
        f"failed to read expected number of bytes for {ref}: got {written} of {size}"
    )


def finish_copy(
    writer: Writer,
    ref: str,
    written: int,
    size: int,
    expected: Digest | None,
    labels: Mapping[str, str] | None,
) -> Info | None:
    """The end of every copy into ``writer``: DataLoss when fewer than ``size`` bytes
    came, else the commit's Info (None when the content already existed); commit errors
    keep their kind, reading ``failed commit on ref "<ref>": ...``."""
    if size and written < size:
        raise shorter_than(ref, written, size)
    try:
        return writer.commit(size, expected, labels)
    except errdefs.AlreadyExists:
        return None
    except errdefs.ErrdefsError as e:
        raise errdefs.wrap(e, f'failed commit on ref "{ref}"') from e


def read_exactly(source: Source, size: int, ref: str) -> bytearray:
    """All ``size`` bytes of ``source``, with :func:`copy`'s errors: DataLoss when it ends
    early, FailedPrecondition when it holds more."""
    buf = bytearray()
    while len(buf) <= size:
        chunk = source.read(size + 1 - len(buf))
        if not chunk:
            break
        buf += chunk
    if len(buf) > size:
        raise longer_than(ref, size)
    if len(buf) < size:
        raise shorter_than(ref, len(buf), size)
    return buf


class IngesterManager(Ingester, Manager, Protocol):
    """What :func:`write_blob` needs: writers, and Info for content that exists."""


def write_blob(
    store: IngesterManager,
    ref: str,
    source: Source,
    desc: Descriptor,
    labels: Mapping[str, str] | None = None,
    *,
    timeout: float | None = None,
) -> Info:
    """Write ``source`` as ``desc`` under ``ref`` (waiting for a locked ref, see
    :func:`open_writer`) and return the blob's Info. Content that already exists is not
    read and its Info is returned. Errors as :func:`open_writer` and :func:`copy`.

    A known size of at most the store's ``small_blob_max`` (a :class:`Putter`) is read
    into memory and committed with one :meth:`Putter.put`, without an ingest. A source
    already in memory (:class:`io.BytesIO`) costs nothing to read: on a store whose
    ``check_before_put`` is False (S3) it is put without asking first, and the put
    itself finds existing content (AlreadyExists: nothing is written again); another
    source is first checked with :meth:`Putter.exists` (one request for new content).
    """
    if isinstance(store, Putter) and 0 < desc.size <= store.small_blob_max:
        if store.check_before_put or not isinstance(source, io.BytesIO):
            existing = _committed(store, desc)
            if existing is not None:
                return existing
        data = read_exactly(source, desc.size, ref)
        try:
            return store.put(ref, desc, data, labels)
        except errdefs.AlreadyExists:
            return store.info(desc.digest)
        except errdefs.Unavailable as e:
            if "lock" in e.details:  # a lock file held past its wait: no busy ref
                raise
            source = io.BytesIO(data)  # a writer holds the ref's ingest: wait for it
        except (errdefs.FailedPrecondition, errdefs.ResourceExhausted) as e:
            context = f'failed commit on ref "{ref}"'
            raise (e if context in str(e) else errdefs.wrap(e, context)) from e
    try:
        writer = open_writer(store, ref, desc, timeout=timeout)
    except errdefs.AlreadyExists:
        return store.info(desc.digest)
    with writer:
        info = copy(writer, source, desc.size, desc.digest, labels)
    return info if info is not None else store.info(desc.digest)


def _committed(store: IngesterManager, desc: Descriptor) -> Info | None:
    """The Info of ``desc``'s content if it is committed with ``desc``'s size (not when
    what is at its name is damaged: the commit that follows repairs it). A
    :class:`Putter` whose questions are round trips (``check_before_put`` False) is
    first asked only whether it exists: one request for content it lacks."""
    putter = store if isinstance(store, Putter) else None
    if putter is not None and not putter.check_before_put and not putter.exists(desc.digest):
        return None
    try:
        existing = store.info(desc.digest)
    except (errdefs.NotFound, errdefs.DataLoss):
        return None
    return existing if existing.size == desc.size else None


def read_blob(provider: Provider, desc: Descriptor | Digest) -> bytes:
    """The whole blob, checked against its digest (and the descriptor's size, if set).

    For small content (manifests, configs). NotFound if it is not committed; DataLoss if
    the bytes read are short or do not match (a blob damaged on disk is never trusted).
    """
    digest = desc.digest if isinstance(desc, Descriptor) else Digest.parse(desc)
    want = desc.size if isinstance(desc, Descriptor) else 0
    with provider.reader_at(desc) as ra:
        if want and ra.size != want:
            raise errdefs.DataLoss(f"content {digest} has {ra.size} bytes, expected {want}")
        data = ra.read_at(0, ra.size)
    if len(data) != ra.size:
        raise errdefs.DataLoss(f"content {digest}: read {len(data)} of {ra.size} bytes")
    h = digest.hasher()
    h.update(data)
    if h.hexdigest() != digest.encoded:
        raise errdefs.DataLoss(
            f"content {digest} does not match its digest (got {digest.algorithm}:{h.hexdigest()})"
        )
    return data


def list_content(manager: Manager, *filters: str) -> list[Info]:
    """Every Info matching ``filters`` (see :meth:`Manager.walk`)."""
    return list(manager.walk(*filters))
