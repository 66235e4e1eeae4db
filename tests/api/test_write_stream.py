"""``Content/Write`` on the wire: containerd's STAT / WRITE / COMMIT lock-step, driven
message by message over a real socket against the in-process server."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from ingestq import errdefs
from ingestq.api.convert import from_timestamp
from ingestq.api.proto.containerd.services.content.v1 import content_pb2 as c
from ingestq.store import EMPTY, Descriptor, Digest
from tests.api.conftest import Served, ServerFactory
from tests.api.wire import Content, Leases, WriteStream, commit, md, stat, status_of, write
from tests.servers.util import wait_until

SLACK = timedelta(seconds=2)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def code_of(exc: pytest.ExceptionInfo[grpc.RpcError]) -> tuple[grpc.StatusCode, str]:
    return status_of(exc.value)


def test_fresh_stat_reply_has_empty_digest_timestamps_and_total(api_server: Served) -> None:
    before = datetime.now(UTC)
    with api_server.channel() as ch:
        s = WriteStream(ch)
        reply = s.send(stat("fresh", total=11))
        assert reply.action == c.STAT
        assert (reply.offset, reply.total, reply.digest) == (0, 11, str(EMPTY))
        for ts in (reply.started_at, reply.updated_at):
            assert before - SLACK <= from_timestamp(ts) <= datetime.now(UTC) + SLACK
        assert s.half_close() == grpc.StatusCode.OK


def test_one_reply_per_request_each_with_offset_and_digest(api_server: Served) -> None:
    data = b"hello world"
    with api_server.channel() as ch:
        s = WriteStream(ch)
        replies = [
            s.send(stat("lockstep", total=len(data), expected=sha(data))),
            s.send(stat()),
            s.send(write(0, data[:5])),
            s.send(write(5, data[5:])),
            s.send(commit(len(data), len(data), sha(data))),
        ]
        assert [r.action for r in replies] == [c.STAT, c.STAT, c.WRITE, c.WRITE, c.COMMIT]
        assert [r.offset for r in replies] == [0, 0, 5, 11, 11]
        assert [r.digest for r in replies] == [
            str(EMPTY),
            str(EMPTY),
            sha(data[:5]),
            sha(data),
            sha(data),
        ]
        assert all(r.total == len(data) for r in replies)
        assert all(r.HasField("started_at") and r.HasField("updated_at") for r in replies)
        assert s.half_close() == grpc.StatusCode.OK  # the stream ended after COMMIT
    assert api_server.store is not None
    with api_server.store.reader_at(Digest.parse(sha(data))) as ra:
        assert ra.read_at(0, ra.size) == data


def test_wrong_offset_is_out_of_range(api_server: Served) -> None:
    with api_server.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("offsets"))
        s.send(write(0, b"abc"))
        with pytest.raises(grpc.RpcError) as exc:
            s.send(write(5, b"de"))
        assert code_of(exc) == (
            grpc.StatusCode.OUT_OF_RANGE,
            "write @5 must occur at current offset 3: out of range",
        )
    assert api_server.store is not None
    assert api_server.store.status("offsets").offset == 3  # nothing written, data kept


def test_offset_zero_with_data_restarts_the_ingest(api_server: Served) -> None:
    with api_server.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("restart"))
        s.send(write(0, b"0123456789"))
        reply = s.send(write(0, b"abc"))
        assert (reply.offset, reply.digest) == (3, sha(b"abc"))
        done = s.send(commit(3, 3, sha(b"abc")))
        assert done.digest == sha(b"abc")


def test_expected_content_present_at_open_is_already_exists(api_server: Served) -> None:
    client = api_server.client()
    with client.writer("first") as w:
        w.write(b"x" * 100)
        w.commit(100, Digest.parse(sha(b"x" * 100)))
    with api_server.channel() as ch:
        s = WriteStream(ch)
        with pytest.raises(grpc.RpcError) as exc:
            s.send(stat("second", total=100, expected=sha(b"x" * 100)))
        assert code_of(exc) == (
            grpc.StatusCode.ALREADY_EXISTS,
            f"content {sha(b'x' * 100)}: already exists",
        )
    with pytest.raises(errdefs.NotFound):
        client.status("second")


def test_expected_content_appearing_later_aborts_the_ingest(api_server: Served) -> None:
    data = b"y" * 64
    client = api_server.client()
    with api_server.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("late"))
        s.send(write(0, data[:10]))
        with client.writer("other") as w:  # another writer commits the content meanwhile
            w.write(data)
            w.commit(len(data), Digest.parse(sha(data)))
        with pytest.raises(grpc.RpcError) as exc:
            s.send(write(10, data[10:], expected=sha(data)))
        assert code_of(exc) == (
            grpc.StatusCode.ALREADY_EXISTS,
            f"blob with expected digest {sha(data)} exists: already exists",
        )
    with pytest.raises(errdefs.NotFound):
        client.status("late")


def test_the_ref_is_locked_for_the_life_of_the_stream(api_server: Served) -> None:
    assert api_server.store is not None
    with api_server.channel() as ch:
        holder = WriteStream(ch)
        holder.send(stat("held"))
        other = WriteStream(ch)
        with pytest.raises(grpc.RpcError) as exc:
            other.send(stat("held"))
        code, message = code_of(exc)
        assert code == grpc.StatusCode.UNAVAILABLE
        assert message.startswith("ref held locked for ") and message.endswith(": unavailable")
        # the same lock a worker takes through the store
        with pytest.raises(errdefs.Unavailable):
            api_server.store.writer("held")
        holder.send(write(0, b"data"))
        assert holder.half_close() == grpc.StatusCode.OK


def test_half_close_releases_the_ref_before_the_stream_ends(api_server: Served) -> None:
    assert api_server.store is not None
    with api_server.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("prompt"))
        s.send(write(0, b"partial"))
        assert s.half_close() == grpc.StatusCode.OK
    # no waiting: the lock was released before the stream's status went out
    with api_server.store.writer("prompt") as w:
        assert w.status().offset == len(b"partial")


def test_partial_data_is_kept_when_the_client_goes_away(api_server: Served) -> None:
    store = api_server.store
    assert store is not None
    with api_server.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("gone"))
        s.send(write(0, b"z" * 1000))
        s.cancel()

    def reopened() -> bool:  # the server learns of the cancellation asynchronously
        with store.writer("gone") as w:
            return w.status().offset == 1000

    assert wait_until(reopened, 10.0, "the cancelled stream's ref to be released")


def test_resume_reports_stored_offset_digest_and_start_time(api_server: Served) -> None:
    with api_server.channel() as ch:
        first = WriteStream(ch)
        started = first.send(stat("resume")).started_at
        first.send(write(0, b"abcdef"))
        first.half_close()
        again = WriteStream(ch)
        reply = again.send(stat("resume"))
        assert (reply.offset, reply.digest) == (6, sha(b"abcdef"))
        assert from_timestamp(reply.started_at) == from_timestamp(started)
        reply = again.send(write(6, b"gh"))
        assert reply.digest == sha(b"abcdefgh")
        again.half_close()


def test_commit_size_mismatch_is_failed_precondition_and_keeps_data(
    api_server: Served,
) -> None:
    with api_server.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("size"))
        s.send(write(0, b"12345"))
        with pytest.raises(grpc.RpcError) as exc:
            s.send(commit(5, total=6))
        assert code_of(exc) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            '"size" failed size validation: 5 != 6: failed precondition',
        )
    assert api_server.client().status("size").offset == 5


def test_commit_digest_mismatch_is_failed_precondition(api_server: Served) -> None:
    with api_server.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("digest"))
        s.send(write(0, b"12345"))
        with pytest.raises(grpc.RpcError) as exc:
            s.send(commit(5, expected=sha(b"other")))
        code, message = code_of(exc)
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert message == (
            f"unexpected commit digest {sha(b'12345')}, expected {sha(b'other')}: "
            "failed precondition"
        )


def test_commit_labels_are_recorded(api_server: Served) -> None:
    with api_server.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("labelled"))
        s.send(commit(0, data=b"L", labels={"a": "1", "b": "2"}))
    assert dict(api_server.client().info(sha(b"L")).labels) == {"a": "1", "b": "2"}


def test_first_message_must_name_a_ref(api_server: Served) -> None:
    with api_server.channel() as ch:
        s = WriteStream(ch)
        with pytest.raises(grpc.RpcError) as exc:
            s.send(write(0, b"x"))
        assert code_of(exc) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "first message must have a reference: invalid argument",
        )


def test_write_needs_a_namespace(api_server: Served) -> None:
    with api_server.channel() as ch:
        s = WriteStream(ch, md(None))
        with pytest.raises(grpc.RpcError) as exc:
            s.send(stat("x"))
        assert code_of(exc) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "namespace is required: failed precondition",
        )


def test_messages_up_to_16_mib_are_accepted(api_server: Served) -> None:
    data = bytes(15 << 20)
    with api_server.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("big"))
        reply = s.send(write(0, data))
        assert (reply.offset, reply.digest) == (len(data), sha(data))
        s.half_close()


def test_write_under_an_unknown_lease_is_not_found(api_server: Served) -> None:
    with api_server.channel() as ch:
        s = WriteStream(ch, md("default", lease="nope"))
        with pytest.raises(grpc.RpcError) as exc:
            s.send(stat("leased"))
        assert code_of(exc) == (grpc.StatusCode.NOT_FOUND, 'lease "nope": not found')


def test_a_lease_records_the_ingest_then_the_content(api_server: Served) -> None:
    from ingestq.api.proto.containerd.services.leases.v1 import leases_pb2 as le

    with api_server.channel() as ch:
        leases = Leases(ch)
        leases.Create(le.CreateRequest(id="L1"), metadata=md())
        s = WriteStream(ch, md("default", lease="L1"))
        s.send(stat("leased"))
        during = leases.ListResources(le.ListResourcesRequest(id="L1"), metadata=md())
        assert [(r.type, r.id) for r in during.resources] == [("ingests", "leased")]
        s.send(commit(0, data=b"protected"))
        after = leases.ListResources(le.ListResourcesRequest(id="L1"), metadata=md())
        assert [(r.type, r.id) for r in after.resources] == [("content", sha(b"protected"))]


def test_ingest_is_visible_while_the_stream_writes(api_server: Served) -> None:
    with api_server.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("visible", total=10, expected=sha(b"0123456789")))
        s.send(write(0, b"12345"))
        resp = Content(ch).Status(c.StatusRequest(ref="visible"), metadata=md())
        assert (resp.status.ref, resp.status.offset, resp.status.total) == ("visible", 5, 10)
        s.half_close()


def test_expected_digest_opens_with_the_descriptor_total(api_server: Served) -> None:
    assert api_server.store is not None
    with api_server.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("described", total=4, expected=sha(b"abcd")))
        assert api_server.store.status("described").total == 4
        s.half_close()
    desc = Descriptor(Digest.parse(sha(b"abcd")), 5)
    with pytest.raises(errdefs.FailedPrecondition):
        api_server.store.writer("described", desc)


def test_a_durable_store_commits_a_large_restarted_ingest(
    api_server_factory: ServerFactory,
) -> None:
    """With fsync on (the store then starts writeback as the file grows), the bytes
    committed are exactly the bytes sent, also after a restart at offset 0."""
    served = api_server_factory(fsync=True)
    chunk = 1 << 20
    data = bytes(range(256)) * (20 * chunk // 256)
    with served.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("durable", total=len(data), expected=sha(data)))
        for off in range(0, 9 * chunk, chunk):
            s.send(write(off, data[off : off + chunk]))
        s.send(write(0, data[:chunk]))  # restart
        for off in range(chunk, len(data), chunk):
            reply = s.send(write(off, data[off : off + chunk]))
        assert reply.digest == sha(data)
        assert s.send(commit(len(data), len(data), sha(data))).digest == sha(data)
    assert served.store is not None
    with served.store.reader_at(Digest.parse(sha(data))) as ra:
        assert ra.read_at(0, ra.size) == data


def test_reopening_with_another_total_is_failed_precondition(api_server: Served) -> None:
    """Without an expected digest too, as the store refuses a descriptor of another size
    (the store contract's ``resume-total``); the refused stream leaves the ref free."""
    data = b"0123456789"
    with api_server.channel() as ch:
        first = WriteStream(ch)
        first.send(stat("retotal", total=len(data), expected=sha(data)))
        first.send(write(0, data[:4]))
        assert first.half_close() == grpc.StatusCode.OK
        other = WriteStream(ch)
        with pytest.raises(grpc.RpcError) as exc:
            other.send(stat("retotal", total=20))
        assert code_of(exc) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "provided total differs from status: 20 != 10 (abort ref retotal to start over): "
            "failed precondition",
        )
        same = WriteStream(ch)
        reply = same.send(stat("retotal", total=len(data)))
        assert (reply.offset, reply.total) == (4, len(data))
        same.send(write(4, data[4:]))
        assert same.send(commit(len(data), expected=sha(data))).digest == sha(data)


def test_a_total_without_expected_is_recorded_and_reopening_with_another_is_refused(
    api_server: Served,
) -> None:
    """containerd records the total of ``Descriptor{size: total}``: Status shows it after
    the stream ends, and a later stream with another total is checked against it."""
    data = b"0123456789"
    with api_server.channel() as ch:
        first = WriteStream(ch)
        first.send(stat("total-only", total=len(data)))
        first.send(write(0, data[:4]))
        assert first.half_close() == grpc.StatusCode.OK
        status = Content(ch).Status(c.StatusRequest(ref="total-only"), metadata=md()).status
        assert (status.offset, status.total) == (4, len(data))
        other = WriteStream(ch)
        with pytest.raises(grpc.RpcError) as exc:
            other.send(stat("total-only", total=20))
        assert code_of(exc) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "provided total differs from status: 20 != 10 (abort ref total-only to start over): "
            "failed precondition",
        )
        same = WriteStream(ch)
        reply = same.send(stat("total-only"))
        assert (reply.offset, reply.total) == (4, len(data))
        same.send(write(4, data[4:]))
        assert same.send(commit(len(data))).digest == sha(data)
