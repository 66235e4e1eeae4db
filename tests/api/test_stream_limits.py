"""The server's thread bounds, driven with a real gRPC client over a unix socket: idle
streams cannot starve unary calls, streams beyond the budget and calls beyond the pool
are refused at once, idle Write streams end keeping their data, and streams whose client
stopped reading are cancelled."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from ingestq import errdefs
from ingestq.api.proto.containerd.services.content.v1 import content_pb2 as c
from ingestq.api.server import ApiServer, default_max_streams
from ingestq.store import Digest, LocalStore
from tests.api.conftest import Served, ServerFactory
from tests.api.wire import Content, WriteStream, commit, md, stat, status_of, write
from tests.servers.util import wait_until

#: The deadline of every call here: a call that waited for a thread would hit it.
DEADLINE = 10.0
#: A client window that does not grow, so a client that stops reading stalls the server.
NO_BDP = (("grpc.http2.bdp_probe", 0), ("grpc.max_receive_message_length", 16 << 20))


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def idle_writes(ch: grpc.Channel, n: int, prefix: str = "idle") -> list[WriteStream]:
    """``n`` Write streams that each sent one STAT (and got its reply), then nothing."""
    streams = []
    for i in range(n):
        s = WriteStream(ch)
        s.send(stat(f"{prefix}{i}"))
        streams.append(s)
    return streams


def committed(served: Served, data: bytes, labels: dict[str, str] | None = None) -> str:
    assert served.store is not None
    with served.store.writer(f"blob-{sha(data)}") as w:
        w.write(data)
        w.commit(len(data), Digest.parse(sha(data)), labels)
    return sha(data)


def test_unary_calls_answer_while_idle_streams_fill_the_budget(
    api_server_factory: ServerFactory,
) -> None:
    served = api_server_factory(max_workers=4)  # 3 streams, 1 thread kept for unary calls
    digest = committed(served, b"present")
    with served.channel() as ch:
        streams = idle_writes(ch, 3)
        content = Content(ch)
        status = content.Status(c.StatusRequest(ref="idle1"), metadata=md(), timeout=DEADLINE)
        assert status.status.ref == "idle1"
        info = content.Info(c.InfoRequest(digest=digest), metadata=md(), timeout=DEADLINE)
        assert info.info.size == len(b"present")
        listed = content.ListStatuses(c.ListStatusesRequest(), metadata=md(), timeout=DEADLINE)
        assert sorted(s.ref for s in listed.statuses) == ["idle0", "idle1", "idle2"]
        # List is a stream too (a client that stops reading it holds its thread): it
        # waits its turn like Write and Read, refused at once while the budget is full.
        with pytest.raises(grpc.RpcError) as exc:
            list(content.List(c.ListContentRequest(), metadata=md(), timeout=DEADLINE))
        assert status_of(exc.value)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert streams[0].half_close() == grpc.StatusCode.OK
        blobs = content.List(c.ListContentRequest(), metadata=md(), timeout=DEADLINE)
        assert [i.digest for batch in blobs for i in batch.info] == [digest]
        for s in streams[1:]:
            assert s.half_close() == grpc.StatusCode.OK


def test_a_stream_beyond_the_budget_is_resource_exhausted_at_once(
    api_server_factory: ServerFactory,
) -> None:
    served = api_server_factory(max_workers=4, max_streams=2)
    digest = committed(served, b"readable")
    with served.channel() as ch:
        first, _second = idle_writes(ch, 2)
        extra = WriteStream(ch)
        with pytest.raises(grpc.RpcError) as exc:
            extra.send(stat("extra"))
        assert status_of(exc.value) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Write: all 2 streams are in use, retry later: resource exhausted",
        )
        read = Content(ch).Read(
            c.ReadContentRequest(digest=digest), metadata=md(), timeout=DEADLINE
        )
        with pytest.raises(grpc.RpcError) as exc:
            list(read)
        assert status_of(exc.value)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert first.half_close() == grpc.StatusCode.OK  # gives its slot back as it ends
        again = WriteStream(ch)
        assert again.send(stat("extra")).offset == 0
        assert again.half_close() == grpc.StatusCode.OK


def test_an_idle_write_stream_ends_and_keeps_its_data(
    api_server_factory: ServerFactory,
) -> None:
    served = api_server_factory(stream_idle_timeout=0.5)
    data = b"0123456789"
    with served.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("stalled", total=len(data), expected=sha(data)))
        s.send(write(0, data[:4]))
        err = s.wait_end()  # the client sends nothing more and does not half-close
        assert status_of(err) == (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "ref stalled kept at offset 4 for a resume: Write stream idle: no message from "
            "the client for 0.5s: context deadline exceeded",
        )
        status = Content(ch).Status(c.StatusRequest(ref="stalled"), metadata=md())
        assert (status.status.offset, status.status.total) == (4, len(data))
        resumed = WriteStream(ch)  # the ref is free again and resumes where it stopped
        reply = resumed.send(stat("stalled", total=len(data), expected=sha(data)))
        assert (reply.offset, reply.digest) == (4, sha(data[:4]))
        resumed.send(write(4, data[4:]))
        assert resumed.send(commit(len(data), len(data), sha(data))).digest == sha(data)
    assert served.client().info(sha(data)).size == len(data)


def test_a_write_stream_that_never_sends_ends(api_server_factory: ServerFactory) -> None:
    served = api_server_factory(stream_idle_timeout=0.5)
    with served.channel() as ch:
        assert status_of(WriteStream(ch).wait_end()) == (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "Write stream idle: no message from the client for 0.5s: context deadline exceeded",
        )


def test_a_reader_that_stops_reading_is_cancelled_and_frees_its_slot(
    api_server_factory: ServerFactory,
) -> None:
    served = api_server_factory(max_workers=2, max_streams=1, stream_idle_timeout=1.0)
    data = bytes(range(256)) * (32 << 12)  # 8 MiB: far more than the client buffers
    digest = committed(served, data)
    with grpc.insecure_channel(served.address, options=NO_BDP) as ch:
        content = Content(ch)
        stalled = content.Read(c.ReadContentRequest(digest=digest), metadata=md())
        assert next(iter(stalled)).offset == 0  # then the client stops reading

        def reads_whole_blob() -> bool:
            chunks = content.Read(
                c.ReadContentRequest(digest=digest), metadata=md(), timeout=DEADLINE
            )
            return sum(len(m.data) for m in chunks) == len(data)

        with pytest.raises(grpc.RpcError) as exc:
            reads_whole_blob()  # the stalled reader holds the only stream slot
        assert status_of(exc.value)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert wait_until(reads_whole_blob, 30.0, "the stalled Read to be cancelled")
        with pytest.raises(grpc.RpcError) as exc:
            list(stalled)
        assert status_of(exc.value)[0] == grpc.StatusCode.CANCELLED


def test_a_list_whose_client_stopped_reading_holds_a_stream_slot_not_a_unary_thread(
    api_server_factory: ServerFactory,
) -> None:
    """One idle Write and a List whose client stopped reading fill the stream budget (2
    of 3 threads): a third stream is refused at once, and unary calls still answer,
    on the thread kept for them; once the idle timeout ends the List, a List answers."""
    served = api_server_factory(max_workers=3, max_streams=2, stream_idle_timeout=1.5)
    labels = {f"label{i}": "v" * 4000 for i in range(60)}  # 240 KB of labels per blob
    for i in range(40):  # a List of 9.6 MB, far past what the transport buffers
        committed(served, f"blob {i}".encode(), labels)
    with grpc.insecure_channel(served.address, options=NO_BDP) as ch:
        content = Content(ch)
        idle_writes(ch, 1)
        stalled = content.List(c.ListContentRequest(), metadata=md())
        next(stalled)  # it runs, and stalls once the window is full

        def list_code() -> grpc.StatusCode:
            try:
                list(content.List(c.ListContentRequest(), metadata=md(), timeout=DEADLINE))
            except grpc.RpcError as e:
                return e.code()
            return grpc.StatusCode.OK

        assert list_code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for _ in range(3):
            content.ListStatuses(c.ListStatusesRequest(), metadata=md(), timeout=DEADLINE)
        assert wait_until(
            lambda: list_code() == grpc.StatusCode.OK, 30.0, "the idle timeout to end the List"
        )
        cancel: Callable[[], object] = stalled.cancel
        cancel()


@pytest.mark.parametrize(
    ("max_workers", "max_streams", "timeout"),
    [(1, None, 60.0), (4, 4, 60.0), (4, 0, 60.0), (4, 2, 0.0)],
)
def test_bounds_that_do_not_fit_are_invalid(
    tmp_path: Path, max_workers: int, max_streams: int | None, timeout: float
) -> None:

    root = tmp_path
    with pytest.raises(errdefs.InvalidArgument):
        ApiServer(
            LocalStore(root, fsync=False),
            root,
            max_workers=max_workers,
            max_streams=max_streams,
            stream_idle_timeout=timeout,
        )


def test_the_default_budget_keeps_a_quarter_of_the_threads_for_unary_calls() -> None:
    assert [default_max_streams(n) for n in (2, 4, 32, 64)] == [1, 3, 24, 48]
