"""One ingest attempt: put one blob from a Source into the store, resumable and verified.

:func:`ingest_once` returns the blob's result, raises :class:`RefBusy` when another
writer holds the ref (the caller decides how to wait: :func:`ingestq.ingest.wait.ingest`
waits in process, the Celery task retries), or raises the errdefs error of the failure.

One attempt, step by step:

1. With an expected digest already committed: return its Info, fetch nothing (labels
   given are merged into the blob's labels). A committed blob whose size differs from
   the request's ``size`` is FailedPrecondition, as a commit of that size would be
   (once the store has checked the blob is intact: a damaged one is fetched again).
2. ``store.writer(ref, expected)``: takes the host file lock and every extra locker
   (the Redis lease on workers). Locked: RefBusy. Committed meanwhile: as in 1.
   Then ``hooks.started``.
3. Resume: ask the source for the bytes from the stored offset (guarded by the
   validator recorded when the ingest started); a source that starts elsewhere (a
   server that ignored Range, a changed resource) makes the writer truncate to 0.
   A real resume is ``hooks.resumed``.
4. Copy what the source delivers (at most 1 MiB a read), writing every piece before
   reading the next, so a failure mid-body keeps every byte that arrived; reporting
   ``hooks.progress`` (offset, total) and asking ``hooks.cancelled`` at every piece.
   A local file (:class:`~ingestq.fetch.files.LocalFileStream`) into a writer that can
   take a descriptor (:class:`~ingestq.store.fdcopy.FdCopier`) is copied by the kernel
   instead, :data:`FILE_PIECE` bytes a piece, with the same checks and events.
5. Check size (announced and actual) and digest before committing; content that is
   wrong (longer than expected, digest mismatch) is dropped from the ingest so a retry
   starts clean. Fewer bytes than the request's ``size`` or, without one, than the
   source announced when the ingest started (kept in the resume hint) is DataLoss and
   keeps the prefix for a resume: a resume answered "nothing left" early never
   commits a prefix as the blob.
6. Commit (atomic, content-addressed); AlreadyExists counts as success.

Small blobs (at most the store's ``small_blob_max``, a
:class:`~ingestq.store.protocols.Putter` store) skip steps 2 to 6: of known digest and
size, read whole into memory under the ref's lock and committed with one ``put``; from
a :class:`~ingestq.fetch.source.HostLocal` source (a file) without the lock, since
reading a file twice costs less than single-flight and the put commits once; from a
file of no known digest, when the size it has when opened fits, hashed in memory and
put the same way (a file that grows meanwhile goes to the writer path). No ingest
directory is made, and there is nothing to resume.

Sources fetched without an expected digest that can be asked conditionally
(:class:`~ingestq.fetch.source.Conditional`: HTTP) are remembered: the commit records
the source's validators with the digest they produced (:mod:`ingestq.store.fetched`,
keyed by the source's ref), and a later attempt that starts from 0 with that blob still
committed asks "only if changed" instead of step 3: "not modified" returns the blob
(``fetched=False``, its empty ingest removed), anything else is fetched as usual. A
second ingest of the same URL that waited for the first (the same default ref, so the
same lock) thus ends with one conditional request and no body.

Error kinds: the source's (NotFound, PermissionDenied, Unauthenticated, Unavailable,
DataLoss, ...), FailedPrecondition for size/digest mismatch, ResourceExhausted when the
store's disk budget has no room (before fetching when the size is known; at the limit,
keeping the prefix for a resume, otherwise), Unavailable("lease ...
lost") when ``hooks.lock_lost()`` says the writer's lease expired under it
(retry-safe), Canceled when ``hooks.cancelled()`` said so.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping

from ingestq import errdefs
from ingestq.fetch.files import LocalFileStream
from ingestq.fetch.refkey import source_ref
from ingestq.fetch.source import Conditional, HostLocal, Opened, Source
from ingestq.ingest.hooks import NO_HOOKS, IngestHooks
from ingestq.ingest.outcome import IngestResult, RefBusy
from ingestq.ingest.protocols import IngestStore
from ingestq.ingest.request import IngestRequest
from ingestq.store.digest import Digest
from ingestq.store.fdcopy import FdCopier
from ingestq.store.fetched import Fetched, FetchedRecords
from ingestq.store.helpers import read_exactly
from ingestq.store.locks import new_holder_id
from ingestq.store.protocols import Manager, Putter, Writer
from ingestq.store.resume import Hint, ResumeHints
from ingestq.store.rules import check_commit_size
from ingestq.store.values import Descriptor, Info

CHUNK = 1 << 20
#: Bytes a kernel copy of a local file moves between two progress/cancel checks.
FILE_PIECE = 16 << 20


def _labelled(store: Manager, info: Info, labels: Mapping[str, str]) -> Info:
    if labels and any(info.labels.get(k) != v for k, v in labels.items()):
        patch = Info(info.digest, info.size, info.created_at, info.updated_at, dict(labels))
        info = store.update(patch, *(f"labels.{k}" for k in labels))
    return info


def _existing(store: Manager, request: IngestRequest, digest: Digest) -> Info:
    """The committed ``digest`` as the result of ``request``: FailedPrecondition when
    its size is not the request's (commit's size check), else labelled."""
    info = store.info(digest)
    check_commit_size(request.ref, info.size, request.size)
    return _labelled(store, info, request.labels)


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
    putter = store if isinstance(store, Putter) else None
    committed = expected is not None and store.exists(expected.digest)
    if expected is not None and committed:
        try:
            info = store.info(expected.digest)
            if not request.size or info.size == request.size:
                return IngestResult(_labelled(store, info, request.labels), fetched=False)
        except errdefs.NotFound:
            pass  # removed (by a gc) since exists(): fetch it like any missing blob
        # Sizes disagree: writer() tells an intact blob (AlreadyExists: the request's
        # size is wrong) from a damaged one (quarantined: fetch it again).
    if expected is not None and not committed and _small(store, putter, request):
        assert putter is not None
        return _put_small(store, putter, source, request, expected, hooks)
    if expected is None and putter is not None and _host_local(source):
        small = _put_small_file(store, putter, source, request, hooks)
        if small is not None:
            return small
    try:
        # With the size known, a store with a disk budget refuses here (ResourceExhausted)
        # before a byte is fetched; of unknown size, the writer stops at the limit.
        writer = store.writer(request.ref, expected, total=request.size)
    except errdefs.AlreadyExists:
        assert expected is not None
        try:
            return IngestResult(_existing(store, request, expected.digest), fetched=False)
        except errdefs.NotFound as e:
            raise errdefs.Unavailable(
                f"ingest {request.ref}: {expected.digest} was removed while being taken "
                "as committed (a gc): try again"
            ) from e
    except errdefs.Unavailable as e:
        raise _busy(store, request.ref, e) from e
    try:
        with writer:
            hooks.started(request, source.name)
            result = _Attempt(store, source, request, writer, hooks).run()
        if not result.fetched:
            # Not modified: the ingest opened for it holds nothing.
            with contextlib.suppress(errdefs.ErrdefsError):
                if store.status(request.ref).offset == 0:
                    store.abort(request.ref)
        return result
    except BaseException:
        # An ingest that holds nothing is not worth keeping for a resume. abort() takes
        # the ref's locks, so it never removes an ingest someone else took meanwhile.
        with contextlib.suppress(errdefs.ErrdefsError):
            if store.status(request.ref).offset == 0:
                store.abort(request.ref)
        raise


def takes_small_path(store: IngestStore, request: IngestRequest) -> bool:
    """Whether ``request`` would be put in one go by ``store``'s small-blob path (no
    ingest directory, no lock): the store is a Putter, the size is known and at most its
    threshold, and no unfinished ingest of the ref waits for a resume."""
    return _small(store, store if isinstance(store, Putter) else None, request)


def _small(store: IngestStore, putter: Putter | None, request: IngestRequest) -> bool:
    """Whether ``request`` takes the store's small-blob path: the store is a Putter
    (``putter``), the size is known and at most its threshold, and no unfinished ingest
    of the ref waits for a resume."""
    if putter is None or not 0 < request.size <= putter.small_blob_max:
        return False
    try:
        store.status(request.ref)
    except errdefs.NotFound:
        return True
    return False


def _busy(store: IngestStore, ref: str, error: errdefs.Unavailable) -> RefBusy:
    try:
        holder = store.locker.holder(ref)
    except errdefs.ErrdefsError:
        holder = None
    return RefBusy(error, holder)


def _put_small(
    store: IngestStore, putter: Putter, source: Source, request: IngestRequest,
    expected: Descriptor, hooks: IngestHooks,
) -> IngestResult:  # fmt: skip
    """A small blob of known digest and size: read whole into memory and committed with
    one :meth:`~ingestq.store.protocols.Putter.put` (``putter`` is ``store``): no ingest
    directory, nothing to resume. A remote source is read under the ref's lock (one
    fetch per digest, as for any ingest); a :class:`~ingestq.fetch.source.HostLocal`
    one (a file) takes no lock, since the put commits once whoever reads it, and asks
    ``hooks.cancelled`` before reading instead of leaving that to the lock's acquire."""
    lease = None
    if not _host_local(source):
        try:
            lease = store.locker.try_lock(request.ref, new_holder_id())
        except errdefs.Unavailable as e:
            raise _busy(store, request.ref, e) from e
    try:
        if lease is None:
            _check_cancelled(hooks, request)
        # Committed by the holder we waited for? A store that checks in its put
        # (AlreadyExists) is not asked first: a request saved on every small job
        # against a fetch wasted only in that race.
        elif putter.check_before_put and store.exists(expected.digest):
            return IngestResult(_existing(store, request, expected.digest), fetched=False)
        hooks.started(request, source.name)
        hooks.progress(0, request.size)
        opened = source.open(0)
        try:
            if opened.size is not None and opened.size != request.size:
                kind = (
                    errdefs.FailedPrecondition if opened.size > request.size else errdefs.DataLoss
                )
                raise kind(f"source {source.name} has {opened.size} bytes, expected {request.size}")
            data = read_exactly(opened.stream, request.size, request.ref)
        finally:
            opened.stream.close()
        _check_cancelled(hooks, request)
        hooks.progress(len(data), request.size)
        try:
            info = _put_or_busy(store, putter, request, expected, data)
        except errdefs.AlreadyExists:
            return IngestResult(_existing(store, request, expected.digest), fetched=False)
        return IngestResult(info, fetched=True, bytes_fetched=len(data))
    finally:
        if lease is not None:
            lease.release()


def _put_or_busy(
    store: IngestStore, putter: Putter, request: IngestRequest, expected: Descriptor,
    data: bytes | bytearray,
) -> Info:  # fmt: skip
    """``putter.put`` of ``data``. Without the ref's lock, an ingest of the ref may have
    started since it was found to have none: the put then resumes it through a writer,
    which finds the ref locked, and that Unavailable, while the ingest has a holder, is
    RefBusy (the caller waits for the holder) rather than a source failure."""
    try:
        return putter.put(request.ref, expected, data, request.labels)
    except errdefs.Unavailable as e:
        try:
            held = store.status(request.ref).holder is not None
        except errdefs.ErrdefsError:
            held = False
        if not held:
            raise
        raise _busy(store, request.ref, e) from e


def _put_small_file(
    store: IngestStore, putter: Putter, source: Source, request: IngestRequest,
    hooks: IngestHooks,
) -> IngestResult | None:  # fmt: skip
    """A host-local source (a file) of no expected digest whose size, announced when it
    is opened (and the request's, if it has one), fits the small-blob path: read whole,
    hashed in memory and committed with one put, without the ref's lock, as
    :func:`_put_small` does. None, with nothing kept open, when it does not fit, when it
    grew while being read, or when an unfinished ingest of the ref waits for a resume:
    the writer path takes it then. DataLoss when it shrank while being read."""
    if request.size > putter.small_blob_max:
        return None
    opened = source.open(0)
    try:
        size = opened.size
        if size is None or opened.start != 0 or (request.size and size != request.size):
            return None
        if not _small(store, putter, dataclasses.replace(request, size=size)):
            return None
        _check_cancelled(hooks, request)
        try:
            data = read_exactly(opened.stream, size, request.ref)
        except errdefs.FailedPrecondition:  # longer than announced: it grew meanwhile
            return None
    finally:
        opened.stream.close()
    _check_cancelled(hooks, request)
    hooks.started(request, source.name)
    hooks.progress(0, size)
    hooks.progress(size, size)
    digest = Digest.from_bytes(data)
    try:
        if putter.check_before_put and store.exists(digest):
            raise errdefs.AlreadyExists(f"content {digest}")
        info = _put_or_busy(store, putter, request, Descriptor(digest, size, request.media_type),
                            data)  # fmt: skip
    except errdefs.AlreadyExists:
        # As a writer's commit of bytes already committed: fetched, and labelled.
        info = _labelled(store, store.info(digest), request.labels)
    return IngestResult(info, fetched=True, bytes_fetched=size)


def _check_cancelled(hooks: IngestHooks, request: IngestRequest) -> None:
    """Canceled when ``hooks`` say the job was canceled (before or after a small read)."""
    if hooks.cancelled():
        raise errdefs.Canceled(f"ingest {request.ref} canceled")


def _host_local(source: Source) -> bool:
    """Whether ``source`` says its bytes are on this host (no single-flight needed)."""
    return isinstance(source, HostLocal) and source.host_local


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
        # The hint to record once the first piece is in (see _copy), and whether one was.
        self._hint: Hint | None = None
        self._hinted = False
        # The total the source announced when the ingest started (0: unknown).
        self._announced = 0

    def _drop_content(self) -> None:
        """Throw away what this writer holds (content known to be wrong)."""
        if not self.hooks.lock_lost():
            self.writer.truncate(0)
        self._hint = None
        self.hints.drop(self.request.ref)

    def _record_hint(self) -> None:
        """Record the pending hint (once); one that says nothing removes any older one."""
        hint, self._hint = self._hint, None
        if hint is not None:
            self.hints.put(self.request.ref, self.source.name, hint.validator, hint.total)
            self._hinted = True

    def _conditional(self) -> Conditional | None:
        """The source, when it is fetched without a digest and can be asked conditionally."""
        source = self.source
        if self.request.digest is not None or not isinstance(source, Conditional):
            return None
        return source

    def _known(self, source: Conditional) -> tuple[Fetched, Info] | None:
        """The record of this source's last fetch and its blob, when still committed
        (with the request's size, if it has one)."""
        record = FetchedRecords(self.store.root).get(source_ref(self.source.name), self.source.name)
        if record is None or (self.request.size and record.size != self.request.size):
            return None
        try:
            info = self.store.info(record.digest)
        except errdefs.NotFound:
            return None
        return (record, info) if info.size == record.size else None

    def run(self) -> IngestResult:
        req = self.request
        offset = self.writer.status().offset
        resumed_from = offset
        if req.size and offset > req.size:
            self.writer.truncate(0)
            offset = 0
        try:
            conditional = self._conditional() if offset == 0 else None
            known = self._known(conditional) if conditional is not None else None
            if conditional is not None and known is not None:
                record, info = known
                opened = conditional.open_if_changed(record.etag, record.last_modified)
                if opened is None:
                    try:
                        return IngestResult(_labelled(self.store, info, req.labels), fetched=False)
                    except errdefs.NotFound:
                        opened = self.source.open(0)  # deleted meanwhile: fetch it again
                offset = self._fetch(offset, opened)
            elif not (req.size and offset == req.size):
                offset = self._fetch(offset)
            return self._commit(resumed_from)
        except errdefs.FailedPrecondition as e:
            if self.hooks.lock_lost():
                raise errdefs.Unavailable(
                    f"ingest {req.ref}: lease lost, will retry", {"reason": "lease-lost"}
                ) from e
            raise

    def _open(self, offset: int, opened: Opened | None) -> tuple[Opened, int]:
        if opened is not None:  # opened at 0 by a conditional request
            self._announced = opened.size or 0
            self._hint = Hint(getattr(self.source, "validator", None), self._announced)
            return opened, 0
        req, source = self.request, self.source
        hint = self.hints.read(req.ref, source.name) if offset > 0 else None
        if offset > 0 and hasattr(source, "if_range"):
            validator = hint.validator if hint is not None else None
            if validator is None and req.digest is None:
                # Nothing can prove the stored prefix is the same resource: restart.
                self.writer.truncate(0)
                offset = 0
            source.if_range = validator
        opened = source.open(offset)
        if opened.start != offset:
            if opened.start != 0:
                opened.stream.close()
                raise errdefs.FailedPrecondition(
                    f"source {source.name} opened at {opened.start}, asked for {offset}"
                )
            self.writer.truncate(0)
            offset = 0
        if offset == 0:
            # Recorded once the first piece is in (see _copy), or when the attempt fails
            # with a prefix: an ingest that completes within one piece never needs it.
            self._announced = opened.size or 0
            self._hint = Hint(getattr(source, "validator", None), self._announced)
        else:
            self._announced = hint.total if hint is not None else 0
            self.hooks.resumed(offset)
        return opened, offset

    def _fetch(self, offset: int, pre: Opened | None = None) -> int:
        req, name = self.request, self.source.name
        opened, offset = self._open(offset, pre)
        try:
            announced = opened.size
            if req.size and announced is not None and announced != req.size:
                if announced > req.size:
                    self._drop_content()
                    raise errdefs.FailedPrecondition(
                        f"source {name} has {announced} bytes, expected {req.size}"
                    )
                raise errdefs.DataLoss(f"source {name} has {announced} bytes, expected {req.size}")
            first = self._announced
            if not req.size and first and announced is not None and announced != first:
                raise errdefs.DataLoss(
                    f"source {name} has {announced} bytes, {first} announced when the "
                    f"ingest started (abort ref {req.ref} to start over)"
                )
            total = req.size or first or announced or 0
            return self._copy(opened, offset, total)
        except BaseException:
            # A prefix left for a resume needs the hint even when it is one piece long.
            if self._hint is not None and self.writer.status().offset > 0:
                self._record_hint()
            raise
        finally:
            opened.stream.close()

    def _copy(self, opened: Opened, offset: int, total: int) -> int:
        req, writer, hooks = self.request, self.writer, self.hooks
        hooks.progress(offset, total)
        size = req.size
        written = offset
        stream = opened.stream
        copier = writer if isinstance(writer, FdCopier) else None
        fd = stream.regular_file_fd() if isinstance(stream, LocalFileStream) else None
        while True:
            if copier is not None and fd is not None:
                want = FILE_PIECE if not size else min(FILE_PIECE, size - written + 1)
                if self._hint is not None and written > offset:
                    self._record_hint()
                n = copier.copy_from(fd, written, want)
                if not n:
                    break
                if size and written + n > size:
                    self._drop_content()
                    raise errdefs.FailedPrecondition(
                        f"source {self.source.name} is longer than the expected {size} bytes"
                    )
                written += n
                self.fetched += n
                hooks.progress(written, total)
                if hooks.cancelled():
                    raise errdefs.Canceled(f"ingest {req.ref} canceled at offset {written}")
                continue
            want = CHUNK if not size else min(CHUNK, size - written + 1)
            chunk = stream.read(want)
            if not chunk:
                break
            if size and written + len(chunk) > size:
                self._drop_content()
                raise errdefs.FailedPrecondition(
                    f"source {self.source.name} is longer than the expected {size} bytes"
                )
            if self._hint is not None and written > offset:
                self._record_hint()
            writer.write(chunk)
            written += len(chunk)
            self.fetched += len(chunk)
            hooks.progress(written, total)
            if hooks.cancelled():
                raise errdefs.Canceled(f"ingest {req.ref} canceled at offset {written}")
        need = size or self._announced
        if need and written < need:
            raise errdefs.DataLoss(f"source {self.source.name} ended at {written} of {need} bytes")
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
            info = _labelled(self.store, self.store.info(digest), req.labels)
        if resumed_from > 0 or self._hinted:
            self.hints.drop(req.ref)
        conditional = self._conditional()
        if conditional is not None:
            name = self.source.name
            etag, modified = conditional.etag, conditional.last_modified
            record = Fetched(name, info.digest, info.size, etag, modified)
            FetchedRecords(self.store.root).put(source_ref(self.source.name), record)
        return IngestResult(info, True, self.fetched, resumed_from)
