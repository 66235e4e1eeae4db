"""The ingest core: put one blob from a Source into the store. Reusable on its own.

:func:`ingest_once` is one attempt: it returns the blob's Info, raises :class:`RefBusy`
when another writer holds the ref (the caller decides how to wait), or raises the
errdefs error of the failure. :func:`ingest` wraps it in an in-process wait with capped
exponential backoff and jitter (the embedded default and any synchronous caller). The
Celery task (:mod:`ingestq.tasks.ingest_task`) calls :func:`ingest_once` and turns RefBusy and
Unavailable into retries.

One attempt, step by step:

1. With an expected digest already committed: return its Info, fetch nothing (labels
   given are merged into the blob's labels).
2. ``store.writer(ref, expected)``: takes the host file lock and every extra locker
   (the Redis lease on workers). Locked: RefBusy. Committed meanwhile: its Info.
3. Resume: ask the source for the bytes from the stored offset (guarded by the
   validator recorded when the ingest started); a source that starts elsewhere (a
   server that ignored Range, a changed resource) makes the writer truncate to 0.
4. Copy in 1 MiB chunks, publishing progress (offset, total, rate) to the lease's
   heartbeat and to ``hooks``, checking cancellation and the lease at every chunk.
5. Check size (announced and actual) and digest before committing; content that is
   wrong (longer than expected, digest mismatch) is dropped from the ingest so a retry
   starts clean. A short body (DataLoss) keeps the prefix for a resume.
6. Commit (atomic, content-addressed); AlreadyExists counts as success.

Error kinds: the source's (NotFound, PermissionDenied, Unauthenticated, Unavailable,
DataLoss, ...), FailedPrecondition for size/digest mismatch, Unavailable("lease ...
lost") when the Redis lease expired under the writer (retry-safe), Canceled when
``hooks.cancelled()`` said so.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ingestq import errdefs
from ingestq.fetch.refkey import make_ref_key, source_ref
from ingestq.fetch.source import Opened, Source
from ingestq.store.digest import Digest
from ingestq.store.helpers import Backoff
from ingestq.store.local import LocalStore
from ingestq.store.protocols import Writer
from ingestq.store.resume import ResumeHints
from ingestq.store.values import Descriptor, Holder, Info
from ingestq.tasks import metrics
from ingestq.tasks.lease import RedisLease, RedisLeaseLocker

CHUNK = 1 << 20


@dataclass(frozen=True)
class IngestRequest:
    """What to ingest: a source spec, the expected digest/size (optional), the ref and
    labels. JSON-serialisable through :meth:`to_json` / :meth:`from_json`."""

    source: Mapping[str, Any]
    ref: str
    digest: Digest | None = None
    size: int = 0
    media_type: str = "application/octet-stream"
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def expected(self) -> Descriptor | None:
        """The expected descriptor, when the digest is known."""
        if self.digest is None:
            return None
        return Descriptor(self.digest, self.size, self.media_type)

    def to_json(self) -> dict[str, Any]:
        """The JSON object a job message carries."""
        return {
            "source": dict(self.source),
            "ref": self.ref,
            "digest": str(self.digest) if self.digest is not None else None,
            "size": self.size,
            "media_type": self.media_type,
            "labels": dict(self.labels),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> IngestRequest:
        """Parse :meth:`to_json`'s output. InvalidArgument on a malformed field."""
        if not isinstance(obj, Mapping):
            raise errdefs.InvalidArgument("ingest request must be an object")
        source, ref, digest = obj.get("source"), obj.get("ref"), obj.get("digest")
        size, labels = obj.get("size", 0), obj.get("labels") or {}
        if not isinstance(source, Mapping):
            raise errdefs.InvalidArgument("ingest request needs a source object")
        if not isinstance(ref, str) or not ref:
            raise errdefs.InvalidArgument("ingest request needs a ref")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise errdefs.InvalidArgument(f"size {size!r} is not a natural number")
        if not isinstance(labels, Mapping):
            raise errdefs.InvalidArgument("labels must be an object")
        return cls(
            source=dict(source),
            ref=ref,
            digest=Digest.parse(digest) if digest is not None else None,
            size=size,
            media_type=str(obj.get("media_type") or "application/octet-stream"),
            labels={str(k): str(v) for k, v in labels.items()},
        )


def make_request(
    source: Mapping[str, Any],
    source_name: str,
    *,
    digest: str | Digest | None = None,
    size: int = 0,
    media_type: str = "application/octet-stream",
    annotations: Mapping[str, str] | None = None,
    ref: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> IngestRequest:
    """An IngestRequest with the default ref (see :mod:`ingestq.fetch.refkey`) when none is given.
    InvalidArgument for a malformed digest or a negative size."""
    d = Digest.parse(digest) if digest is not None else None
    if size < 0:
        raise errdefs.InvalidArgument(f"size {size} is negative")
    if ref is None:
        ref = make_ref_key(d, media_type, annotations) if d is not None else source_ref(source_name)
    return IngestRequest(dict(source), ref, d, size, media_type, dict(labels or {}))


@dataclass(frozen=True)
class IngestResult:
    """The committed blob, whether this attempt fetched bytes, how many, and from where."""

    info: Info
    fetched: bool
    bytes_fetched: int = 0
    resumed_from: int = 0


class RefBusy(Exception):
    """Another writer holds the ref. ``error`` is the store's Unavailable ("ref ...
    locked for ..."), ``holder`` who holds it (with its heartbeat), when known."""

    def __init__(self, error: errdefs.Unavailable, holder: Holder | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.holder = holder


class Hooks:
    """Callbacks of one attempt. Override what you need; the defaults do nothing."""

    def progress(self, offset: int, total: int) -> None:
        """Called after each chunk with the ingest's offset and total (0 = unknown)."""

    def cancelled(self) -> bool:
        """Polled between chunks; True makes the attempt stop with Canceled."""
        return False


NO_HOOKS = Hooks()


def _existing(store: LocalStore, digest: Digest, labels: Mapping[str, str]) -> Info:
    info = store.info(digest)
    if labels and any(info.labels.get(k) != v for k, v in labels.items()):
        patch = Info(info.digest, info.size, info.created_at, info.updated_at, dict(labels))
        info = store.update(patch, *(f"labels.{k}" for k in labels))
    return info


def ingest_once(
    store: LocalStore,
    source: Source,
    request: IngestRequest,
    *,
    hooks: Hooks = NO_HOOKS,
    locker: RedisLeaseLocker | None = None,
    job_id: str = "",
) -> IngestResult:
    """One attempt at ``request`` (see the module docstring). ``locker`` is the Redis
    lease locker the store was built with, if any (for status publishing)."""
    expected = request.expected
    if expected is not None and store.exists(expected.digest):
        return IngestResult(_existing(store, expected.digest, request.labels), fetched=False)
    try:
        writer = store.writer(request.ref, expected)
    except errdefs.AlreadyExists:
        assert expected is not None
        return IngestResult(_existing(store, expected.digest, request.labels), fetched=False)
    except errdefs.Unavailable as e:
        try:
            holder = store.locker.holder(request.ref)
        except errdefs.ErrdefsError:
            holder = None
        raise RefBusy(e, holder) from e
    lease = locker.held(request.ref) if locker is not None else None
    if lease is not None:
        p = lease.progress
        p.job_id, p.source, p.total = job_id, source.name, request.size
        p.expected = str(request.digest) if request.digest else ""
        p.publish = True
    try:
        with writer:
            return _Attempt(store, source, request, writer, hooks, lease).run()
    except BaseException:
        # An ingest that holds nothing is not worth keeping for a resume. abort() takes
        # the ref's locks, so it never removes an ingest someone else took meanwhile.
        with contextlib.suppress(errdefs.ErrdefsError):
            if store.status(request.ref).offset == 0:
                store.abort(request.ref)
        raise


class _Attempt:
    def __init__(
        self,
        store: LocalStore,
        source: Source,
        request: IngestRequest,
        writer: Writer,
        hooks: Hooks,
        lease: RedisLease | None,
    ) -> None:
        self.store = store
        self.source = source
        self.request = request
        self.writer = writer
        self.hooks = hooks
        self.lease = lease
        self.hints = ResumeHints(store.root)
        self.fetched = 0
        self.started = time.monotonic()
        self._validator: str | None = None

    def _lease_lost(self) -> bool:
        return self.lease is not None and self.lease.lost

    def _drop_content(self) -> None:
        """Throw away what this writer holds (content known to be wrong)."""
        if not self._lease_lost():
            self.writer.truncate(0)
        self.hints.drop(self.request.ref)

    def run(self) -> IngestResult:
        req = self.request
        offset = self.writer.status().offset
        resumed_from = offset
        if req.size and offset > req.size:
            self.writer.truncate(0)
            offset = 0
        try:
            if not (req.size and offset == req.size):
                offset = self._fetch(offset)
            return self._commit(resumed_from)
        except errdefs.FailedPrecondition as e:
            if self._lease_lost():
                raise errdefs.Unavailable(
                    f"ingest {req.ref}: lease lost, will retry", {"reason": "lease-lost"}
                ) from e
            raise

    def _open(self, offset: int) -> tuple[Opened, int]:
        req, source = self.request, self.source
        validated = hasattr(source, "if_range")
        if offset > 0 and validated:
            hint = self.hints.get(req.ref, source.name)
            if hint is None and req.digest is None:
                # Nothing can prove the stored prefix is the same resource: restart.
                self.writer.truncate(0)
                offset = 0
            source.if_range = hint  # type: ignore[attr-defined]
        opened = source.open(offset)
        if opened.start != offset:
            if opened.start != 0:
                opened.stream.close()
                raise errdefs.FailedPrecondition(
                    f"source {source.name} opened at {opened.start}, asked for {offset}"
                )
            self.writer.truncate(0)
            offset = 0
        # The validator is recorded once the first chunk is in (see _copy): an ingest
        # that ends within one chunk never needs it, and small blobs skip the file write.
        self._validator = getattr(source, "validator", None) if offset == 0 else None
        if offset > 0:
            metrics.RESUMES.inc()
        return opened, offset

    def _fetch(self, offset: int) -> int:
        req = self.request
        opened, offset = self._open(offset)
        try:
            announced = opened.size
            if req.size and announced is not None and announced != req.size:
                if announced > req.size:
                    self._drop_content()
                    raise errdefs.FailedPrecondition(
                        f"source {self.source.name} has {announced} bytes, expected {req.size}"
                    )
                raise errdefs.DataLoss(
                    f"source {self.source.name} has {announced} bytes, expected {req.size}"
                )
            total = req.size or announced or 0
            return self._copy(opened, offset, total)
        finally:
            opened.stream.close()

    def _copy(self, opened: Opened, offset: int, total: int) -> int:
        req, writer, hooks = self.request, self.writer, self.hooks
        progress = self.lease.progress if self.lease is not None else None
        if progress is not None:
            progress.total = total
        size = req.size
        written = offset
        while True:
            want = CHUNK if not size else min(CHUNK, size - written + 1)
            chunk = opened.stream.read(want)
            if not chunk:
                break
            if size and written + len(chunk) > size:
                self._drop_content()
                raise errdefs.FailedPrecondition(
                    f"source {self.source.name} is longer than the expected {size} bytes"
                )
            if self._validator is not None and written > offset:
                self.hints.put(req.ref, self.source.name, self._validator)
                self._validator = None
            writer.write(chunk)
            written += len(chunk)
            self.fetched += len(chunk)
            metrics.BYTES.inc(len(chunk))
            if progress is not None:
                progress.offset = written
                elapsed = time.monotonic() - self.started
                progress.rate = self.fetched / elapsed if elapsed > 0 else 0.0
            hooks.progress(written, total)
            if hooks.cancelled():
                raise errdefs.Canceled(f"ingest {req.ref} canceled at offset {written}")
        if size and written < size:
            raise errdefs.DataLoss(f"source {self.source.name} ended at {written} of {size} bytes")
        return written

    def _commit(self, resumed_from: int) -> IngestResult:
        req, writer = self.request, self.writer
        if req.digest is not None:
            actual = writer.digest()
            if actual.algorithm == req.digest.algorithm and actual != req.digest:
                self._drop_content()
                raise errdefs.FailedPrecondition(
                    f"unexpected commit digest {actual}, expected {req.digest}",
                    {"ref": req.ref, "reason": "digest-mismatch"},
                )
        try:
            info = writer.commit(req.size, req.digest, req.labels)
        except errdefs.AlreadyExists:
            digest = req.digest or writer.digest()
            info = _existing(self.store, digest, req.labels)
        if resumed_from > 0 or self.fetched > CHUNK:
            self.hints.drop(req.ref)
        return IngestResult(info, True, self.fetched, resumed_from)


def ingest(
    store: LocalStore,
    source: Source,
    request: IngestRequest,
    *,
    hooks: Hooks = NO_HOOKS,
    locker: RedisLeaseLocker | None = None,
    job_id: str = "",
    timeout: float | None = None,
    backoff: Backoff | None = None,
    on_wait: Callable[[RefBusy, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> IngestResult:
    """Ingest ``request`` in this process, waiting while the ref is locked.

    Waits with capped exponential backoff and full jitter (50 ms doubling to 2 s) until
    the ref is free or the expected digest exists (then returns without fetching).
    ``on_wait(busy, delay)`` sees every wait; after ``timeout`` seconds the lock's
    Unavailable is raised. Other errors as :func:`ingest_once`.
    """
    backoff = backoff or Backoff(first=0.05, cap=2.0)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if hooks.cancelled():
            raise errdefs.Canceled(f"ingest {request.ref} canceled while waiting")
        try:
            return ingest_once(store, source, request, hooks=hooks, locker=locker, job_id=job_id)
        except RefBusy as busy:
            delay = backoff.next_delay()
            if deadline is not None and time.monotonic() + delay > deadline:
                raise busy.error from busy
            metrics.LOCK_WAITS.inc()
            if on_wait is not None:
                on_wait(busy, delay)
            sleep(delay)
