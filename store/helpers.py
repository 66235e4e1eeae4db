"""Algorithms written against the store protocols (containerd's content helpers)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import IO, Protocol

import errdefs
from store.digest import Digest
from store.protocols import Ingester, Manager, Provider, Writer
from store.values import Descriptor, Info

COPY_CHUNK = 1 << 20


class Backoff:
    """Capped exponential backoff with full jitter: sleep uniform [0, bound), the bound
    doubling from ``first`` to ``cap`` seconds (containerd: 16 ms .. 2048 ms)."""

    def __init__(self, first: float = 0.016, cap: float = 2.048) -> None:
        self._bound = first
        self._cap = cap

    def next_delay(self) -> float:
        """The next delay in seconds."""
        delay = random.uniform(0, self._bound)
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
    on_wait: Callable[[errdefs.Unavailable], None] | None = None,
) -> Writer:
    """Open a writer, retrying while the ref is locked (Unavailable) until it is free.

    AlreadyExists is raised as soon as the expected content exists (callers treat it as
    success); any other error at once. After ``timeout`` seconds the last Unavailable is
    raised. ``on_wait`` sees each lock error before the wait.
    """
    backoff = backoff or Backoff()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            return ingester.writer(ref, expected)
        except errdefs.Unavailable as e:
            delay = backoff.next_delay()
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            if on_wait is not None:
                on_wait(e)
            sleep(delay)


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def seek_source(source: IO[bytes] | _Readable, offset: int, *, discard: bool = True) -> bool:
    """Position ``source`` at ``offset`` for a resume.

    Seeks a seekable source (a failed seek is an error, as in containerd); otherwise reads
    and discards ``offset`` bytes when ``discard`` is allowed. Returns False when the source
    cannot be positioned and the caller must restart from 0. Raises FailedPrecondition when
    the source is shorter than ``offset``.
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
            raise errdefs.FailedPrecondition(
                f"unable to discard to offset {offset}: source ended {left} bytes early"
            )
        left -= len(chunk)
    return True


def copy(
    writer: Writer,
    source: IO[bytes] | _Readable,
    size: int = 0,
    expected: Digest | None = None,
    labels: Mapping[str, str] | None = None,
    *,
    discard: bool = True,
    on_progress: Callable[[int], None] | None = None,
) -> Info | None:
    """Copy ``source`` into ``writer`` from the writer's stored offset, then commit.

    Resumes by seeking the source, else discarding up to the offset, else truncating the
    writer and restarting. A source that ends before ``size`` is DataLoss; more bytes than
    ``size`` is FailedPrecondition. Returns the Info, or None when the content already
    existed (AlreadyExists counts as success). Errors keep their kind, with the ref as context.
    """
    status = writer.status()
    offset = status.offset
    if offset > 0 and not seek_source(source, offset, discard=discard):
        writer.truncate(0)
        offset = 0
    if size and offset > size:
        writer.truncate(0)
        offset = 0
        if not seek_source(source, 0, discard=False):
            raise errdefs.FailedPrecondition(
                f"ingest {status.ref} holds more than {size} bytes and the source cannot rewind"
            )
    written = offset
    while True:
        want = COPY_CHUNK if not size else min(COPY_CHUNK, size - written + 1)
        chunk = source.read(want)
        if not chunk:
            break
        if size and written + len(chunk) > size:
            raise errdefs.FailedPrecondition(
                f"source for {status.ref} is longer than the expected {size} bytes"
            )
        writer.write(chunk)
        written += len(chunk)
        if on_progress is not None:
            on_progress(written)
    if size and written < size:
        raise errdefs.DataLoss(
            f"failed to read expected number of bytes for {status.ref}: got {written} of {size}"
        )
    try:
        return writer.commit(size, expected, labels)
    except errdefs.AlreadyExists:
        return None
    except errdefs.ErrdefsError as e:
        raise errdefs.wrap(e, f'failed commit on ref "{status.ref}"') from e


class _IngestManagerStore(Ingester, Manager, Protocol):
    pass


def write_blob(
    store: _IngestManagerStore,
    ref: str,
    source: IO[bytes] | _Readable,
    desc: Descriptor,
    labels: Mapping[str, str] | None = None,
    *,
    timeout: float | None = None,
) -> Info:
    """Write ``source`` as ``desc`` under ``ref`` (waiting for a locked ref) and return the
    blob's Info; content that already exists is not read and its Info is returned."""
    try:
        writer = open_writer(store, ref, desc, timeout=timeout)
    except errdefs.AlreadyExists:
        return store.info(desc.digest)
    with writer:
        info = copy(writer, source, desc.size, desc.digest, labels)
    return info if info is not None else store.info(desc.digest)


def read_blob(provider: Provider, desc: Descriptor | Digest) -> bytes:
    """The whole blob (for small content: manifests, configs). DataLoss if it is short."""
    with provider.reader_at(desc) as ra:
        data = ra.read_at(0, ra.size)
        if len(data) != ra.size:
            raise errdefs.DataLoss(f"read {len(data)} of {ra.size} bytes")
        return data


def list_content(manager: Manager, *filters: str) -> list[Info]:
    """Every Info matching ``filters`` (see :meth:`Manager.walk`)."""
    return list(manager.walk(*filters))
