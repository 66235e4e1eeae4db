"""The ``Content/Write`` stream: containerd's STAT / WRITE / COMMIT lock-step.

One stream is one :class:`WriteSession`, holding the store writer (and so the ref lock)
from the first message until the stream ends:

* the first message must name a ref (InvalidArgument ``first message must have a
  reference``); its ``total`` and ``expected`` open the writer: AlreadyExists ``content
  <d>`` when ``expected`` is committed, Unavailable ``ref <ref> locked ...`` when another
  writer (another stream, a worker on this host, or a Redis lease on another host) holds
  the ref, FailedPrecondition ``provided total differs from status: <new> != <stored>``
  when the unfinished ingest of the ref has another known total, with or without
  ``expected`` (the store contract's rule; containerd 1.6 logs that error and starts the
  ingest over at offset 0 without truncating it; abort the ref to start over). A
  ``total`` without ``expected`` is recorded as the ingest's total, as containerd does,
  so Status reports it and a later reopen is checked against it. The lock
  is retried for up to ``lock_wait`` seconds first, as containerd's backend does, so a
  client that reopens a ref right after closing it is not refused;
* every request gets exactly one reply carrying ``offset`` and ``digest`` (the digest of
  the bytes written so far; a fresh ingest reports the empty sha256), plus the
  timestamps and ``total``;
* a later non-empty ``expected`` replaces the expected digest; if that content already
  exists the ingest is aborted and the stream ends with AlreadyExists ``blob with
  expected digest <d> exists``; a later ``total > 0`` replaces the total;
* WRITE and COMMIT: an offset > 0 other than the current one is OutOfRange ``write
  @<n> must occur at current offset <m>``; offset 0 with data already written truncates
  and restarts; data is appended; COMMIT then commits with (total, expected, labels):
  FailedPrecondition on size/digest mismatch (the ingest is kept), AlreadyExists when
  the content appeared meanwhile;
* the stream ends after the COMMIT reply, or when the client half-closes or goes away,
  or, with DeadlineExceeded ``ref <ref> kept at offset <n> for a resume: Write stream
  idle: ...``, when the client sends nothing for the server's stream idle timeout (the
  request iterator raises it, see :mod:`ingestq.api.server.limits`); the writer is then
  closed at once, releasing the ref lock and keeping partial data for a resume.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import grpc

from ingestq import errdefs
from ingestq.api.convert import timestamp
from ingestq.api.proto.containerd.services.content.v1 import content_pb2
from ingestq.store.digest import Digest
from ingestq.store.helpers import Backoff
from ingestq.store.protocols import Store, Writer
from ingestq.store.rules import validate_labels
from ingestq.store.values import Descriptor

STAT = content_pb2.STAT
WRITE = content_pb2.WRITE
COMMIT = content_pb2.COMMIT


def open_writer(
    store: Store,
    ref: str,
    expected: Descriptor | None,
    lock_wait: float,
    alive: Callable[[], bool] = lambda: True,
    *,
    total: int = 0,
) -> Writer:
    """``store.writer(ref, expected, total=total)``, retrying Unavailable (a locked ref)
    at random intervals spread over ``lock_wait`` seconds while ``alive()``, the last
    try at the end of the window; then the last Unavailable is raised. Other errors are
    raised at once. (containerd's backend tries ten times at random intervals within
    about a second: here the bound of each wait doubles from ``lock_wait / 1024`` to
    ``lock_wait / 8``, so a ref freed mid-window is taken within an eighth of it.)

    ``total`` is the size the client announced (``expected.size`` too when there is an
    expected digest): the store records it as the ingest's total, and answers
    FailedPrecondition ``provided total differs from status: <total> != <stored>`` when
    the unfinished ingest of ``ref`` has another known total."""
    deadline = time.monotonic() + lock_wait
    backoff = Backoff(first=lock_wait / 1024, cap=lock_wait / 8) if lock_wait > 0 else None
    while True:
        try:
            return store.writer(ref, expected, total=total)
        except errdefs.Unavailable:
            remaining = deadline - time.monotonic()
            if backoff is None or remaining <= 0 or not alive():
                raise
            time.sleep(min(backoff.next_delay(), remaining))


class WriteSession:
    """The server side of one Write stream (see the module docstring for the rules)."""

    def __init__(
        self,
        store: Store,
        writer: Writer,
        ref: str,
        total: int,
        expected: Digest | None,
        on_commit: Callable[[Digest], None] | None = None,
    ) -> None:
        self._store = store
        self._writer = writer
        self.ref = ref
        self._expected = expected
        self._on_commit = on_commit
        status = writer.status()
        self._total = total if total > 0 else status.total
        self._offset = status.offset
        self._started_at = timestamp(status.started_at)
        self._updated_at = timestamp(status.updated_at)
        self.committed = False

    @property
    def offset(self) -> int:
        """How many bytes the ingest holds."""
        return self._offset

    def close(self) -> None:
        """Close the writer (keeping partial data) and release the ref lock."""
        self._writer.close()

    def handle(self, req: content_pb2.WriteContentRequest) -> content_pb2.WriteContentResponse:
        """Apply one request and return its reply. Errors are errdefs kinds; bad labels
        are InvalidArgument before the request's data is written."""
        if req.labels:
            validate_labels(dict(req.labels))
        if req.expected:
            self._check_expected(Digest.parse(req.expected))
        if req.total > 0:
            self._total = req.total
        action = req.action
        if action == STAT:
            status = self._writer.status()
            self._offset = status.offset
            self._started_at = timestamp(status.started_at)
            self._updated_at = timestamp(status.updated_at)
        elif action in (WRITE, COMMIT):
            self._write(req)
            if action == COMMIT:
                self._commit(dict(req.labels))
        else:
            raise errdefs.InvalidArgument(f"unknown write action {action}")
        return content_pb2.WriteContentResponse(
            action=action,
            offset=self._offset,
            total=self._total,
            digest=str(self._writer.digest()),
            started_at=self._started_at,
            updated_at=self._updated_at,
        )

    def _check_expected(self, expected: Digest) -> None:
        self._expected = expected
        try:
            self._store.info(expected)
        except errdefs.NotFound:
            return
        self._writer.close()
        with contextlib.suppress(errdefs.ErrdefsError):
            self._store.abort(self.ref)
        raise errdefs.AlreadyExists(f"blob with expected digest {expected} exists")

    def _write(self, req: content_pb2.WriteContentRequest) -> None:
        if req.offset > 0 and req.offset != self._offset:
            raise errdefs.OutOfRange(
                f"write @{req.offset} must occur at current offset {self._offset}"
            )
        if req.offset == 0 and self._offset > 0:
            try:
                self._writer.truncate(0)
            except errdefs.ErrdefsError as e:
                raise errdefs.wrap(e, "truncate failed") from e
            self._offset = 0
        data = req.data
        if data:
            n = self._writer.write(data)
            self._offset += n
            if n != len(data):
                raise errdefs.DataLoss(f"wrote {n} of {len(data)} bytes")
        self._updated_at = timestamp(self._writer.status().updated_at)

    def _commit(self, labels: dict[str, str]) -> None:
        info = self._writer.commit(self._total, self._expected, labels or None)
        self.committed = True
        if self._on_commit is not None:
            self._on_commit(info.digest)


def serve_stream(
    requests: Iterator[content_pb2.WriteContentRequest],
    context: grpc.ServicerContext,
    open_session: Callable[[content_pb2.WriteContentRequest], WriteSession],
) -> Iterator[content_pb2.WriteContentResponse]:
    """Run a Write stream: open the session on the first request, reply once per
    request, end after COMMIT or when the client half-closes or goes away. The writer
    is closed (the ref lock released) before the stream's status is sent."""
    try:
        req = next(requests)
    except StopIteration:
        return
    if not req.ref:
        raise errdefs.InvalidArgument("first message must have a reference")
    session = open_session(req)
    try:
        while True:
            yield session.handle(req)
            if req.action == COMMIT:
                return
            try:
                req = next(requests)
            except StopIteration:
                return  # the client half-closed: keep the ingest for a resume
            except grpc.RpcError:
                return  # the client went away: the same
            except errdefs.DeadlineExceeded as e:  # idle client: the same, and say so
                raise errdefs.wrap(
                    e, f"ref {session.ref} kept at offset {session.offset} for a resume"
                ) from e
    finally:
        if not session.committed:
            session.close()
