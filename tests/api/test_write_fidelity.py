"""containerd fidelity of the Write stream: a resumed writer reports the updated_at of
the ingest's last write (not the time it was reopened), and a locked ref is retried
many times over the whole ``lock_wait`` window (not slept on once), so a ref freed
mid-window is taken well before the window ends."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import grpc

from ingestq.api.convert import from_timestamp
from ingestq.api.proto.containerd.services.content.v1 import content_pb2 as c
from ingestq.store.locks import Lease, RefLocker
from ingestq.store.values import Holder
from tests.api.conftest import ServerFactory
from tests.api.wire import Content, WriteStream, md, stat, status_of, write
from tests.servers.util import wait_until


def test_a_resumed_write_reports_the_updated_at_of_the_last_write(
    api_server_factory: ServerFactory,
) -> None:
    served = api_server_factory()
    with served.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("resumed", total=100))
        s.send(write(0, b"a" * 10))
        last = s.send(write(10, b"b" * 30)).updated_at
        assert s.half_close() == grpc.StatusCode.OK
        closed = Content(ch).Status(c.StatusRequest(ref="resumed"), metadata=md()).status
        assert closed.updated_at == last

        later = from_timestamp(last) + timedelta(milliseconds=50)
        wait_until(lambda: datetime.now(UTC) > later, 5, "time to pass the last write")
        s = WriteStream(ch)
        reopened = s.send(stat("resumed", total=100))
        assert reopened.offset == 40
        assert reopened.updated_at == last  # not the time of the reopen
        assert reopened.started_at == closed.started_at
        moved = s.send(write(40, b"c")).updated_at
        assert from_timestamp(moved) > later  # a write moves it on
        assert s.half_close() == grpc.StatusCode.OK


class CountingLocker:
    """The store's own locker, counting the tries of one ref (and telling a test when
    a count is reached)."""

    def __init__(self, inner: RefLocker, ref: str) -> None:
        self.inner = inner
        self.ref = ref
        self.tries: list[float] = []
        self.cond = threading.Condition()

    def try_lock(self, ref: str, holder_id: str) -> Lease:
        if ref == self.ref:
            with self.cond:
                self.tries.append(time.monotonic())
                self.cond.notify_all()
        return self.inner.try_lock(ref, holder_id)

    def holder(self, ref: str) -> Holder | None:
        return self.inner.holder(ref)


def test_a_locked_ref_is_tried_many_times_over_the_whole_window(
    api_server_factory: ServerFactory,
) -> None:
    served = api_server_factory(lock_wait=1.0)
    assert served.store is not None
    counting = CountingLocker(served.store.locker, "held")
    served.store.locker = counting
    holder = served.store.writer("held")
    try:
        with served.channel() as ch:
            start = time.monotonic()
            s = WriteStream(ch)
            try:
                s.send(stat("held"))
                raise AssertionError("a held ref was opened")
            except grpc.RpcError as e:
                code, message = status_of(e)
            ended = time.monotonic()
    finally:
        holder.close()
    assert code == grpc.StatusCode.UNAVAILABLE and "ref held locked for" in message
    assert len(counting.tries) >= 8  # containerd: about ten tries within the second
    assert counting.tries[-1] - counting.tries[0] >= 1.0  # the last try ends the window
    assert ended - start < 30  # and it does end


def test_a_ref_freed_mid_window_is_taken_well_before_the_window_ends(
    api_server_factory: ServerFactory,
) -> None:
    window = 40.0
    served = api_server_factory(lock_wait=window)
    assert served.store is not None
    counting = CountingLocker(served.store.locker, "contended")
    served.store.locker = counting
    holder = served.store.writer("contended")
    with served.channel() as ch:
        s = WriteStream(ch)
        replies: list[c.WriteContentResponse] = []
        opener = threading.Thread(target=lambda: replies.append(s.send(stat("contended"))))
        opener.start()
        with counting.cond:
            assert counting.cond.wait_for(lambda: len(counting.tries) >= 3, timeout=30)
        freed = time.monotonic()
        holder.close()
        opener.join(timeout=window / 2)
        taken = time.monotonic()
        assert not opener.is_alive(), "the freed ref was not taken within half the window"
        assert replies and replies[0].offset == 0
        assert taken - freed < window / 2
        assert s.half_close() == grpc.StatusCode.OK
