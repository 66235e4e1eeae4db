"""One ingest attempt: put one blob from a Source into the store, resumable and verified.

:func:`ingest_once` returns the blob's result, raises :class:`RefBusy` when another
writer holds the ref (the caller decides how to wait: :func:`ingestq.ingest.wait.ingest`
waits in process, the Celery task retries), or raises the errdefs error of the failure.

One attempt, step by step:

1. With an expected digest already committed: return its Info, fetch nothing (labels
   given are merged into the blob's labels).
2. ``store.writer(ref, expected)``: takes the host file lock and every extra locker
   (the Redis lease on workers). Locked: RefBusy. Committed meanwhile: its Info.
   Then ``hooks.started``.
3. Resume: ask the source for the bytes from the stored offset (guarded by the
   validator recorded when the ingest started); a source that starts elsewhere (a
   server that ignored Range, a changed resource) makes the writer truncate to 0.
   A real resume is ``hooks.resumed``.
4. Copy in 1 MiB chunks, reporting ``hooks.progress`` (offset, total) and asking
   ``hooks.cancelled`` at every chunk.
5. Check size (announced and actual) and digest before committing; content that is
   wrong (longer than expected, digest mismatch) is dropped from the ingest so a retry
   starts clean. A short body (DataLoss) keeps the prefix for a resume.
6. Commit (atomic, content-addressed); AlreadyExists counts as success.

Error kinds: the source's (NotFound, PermissionDenied, Unauthenticated, Unavailable,
DataLoss, ...), FailedPrecondition for size/digest mismatch, Unavailable("lease ...
lost") when ``hooks.lock_lost()`` says the writer's lease expired under it
(retry-safe), Canceled when ``hooks.cancelled()`` said so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from ingestq import errdefs
from ingestq.fetch.source import Opened, Source
from ingestq.ingest.hooks import NO_HOOKS, IngestHooks
from ingestq.ingest.outcome import IngestResult, RefBusy
from ingestq.ingest.protocols import IngestStore
from ingestq.ingest.request import IngestRequest
from ingestq.store.digest import Digest
from ingestq.store.protocols import Manager, Writer
from ingestq.store.resume import ResumeHints
from ingestq.store.values import Info

CHUNK = 1 << 20


def _existing(store: Manager, digest: Digest, labels: Mapping[str, str]) -> Info:
    info = store.info(digest)
    if labels and any(info.labels.get(k) != v for k, v in labels.items()):
        patch = Info(info.digest, info.size, info.created_at, info.updated_at, dict(labels))
        info = store.update(patch, *(f"labels.{k}" for k in labels))
    return info


def ingest_once(
    store: IngestStore,
    source: Source,
    request: IngestRequest,
    *,
    hooks: IngestHooks = NO_HOOKS,
) -> IngestResult:
    """One attempt at ``request`` (see the module docstring), reporting to ``hooks``:
    ``done`` or ``failed`` at the end, except for RefBusy (no event)."""
    try:
        result = _attempt(store, source, request, hooks)
    except RefBusy:
        raise
    except Exception as e:
        hooks.failed(e)
        raise
    hooks.done(result)
    return result


def _attempt(
    store: IngestStore, source: Source, request: IngestRequest, hooks: IngestHooks
) -> IngestResult:
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
    try:
        with writer:
            hooks.started(request, source.name)
            return _Attempt(store, source, request, writer, hooks).run()
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
        store: IngestStore,
        source: Source,
        request: IngestRequest,
        writer: Writer,
        hooks: IngestHooks,
    ) -> None:
        self.store = store
        self.source = source
        self.request = request
        self.writer = writer
        self.hooks = hooks
        self.hints = ResumeHints(store.root)
        self.fetched = 0
        self._validator: str | None = None

    def _drop_content(self) -> None:
        """Throw away what this writer holds (content known to be wrong)."""
        if not self.hooks.lock_lost():
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
            if self.hooks.lock_lost():
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
            self.hooks.resumed(offset)
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
        hooks.progress(offset, total)
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
