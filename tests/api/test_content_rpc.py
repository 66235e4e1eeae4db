"""The unary and server-streaming content RPCs on the wire, with containerd's semantics:
Info, Update (field masks), List (batches of <= 100; nothing for an empty store), Delete,
Read (ranged, <= 1 MiB chunks, OutOfRange past the end), Status, ListStatuses, Abort,
and the namespace every call requires."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from ingestq.api.proto.containerd.services.content.v1 import content_pb2 as c
from ingestq.store import Descriptor, Digest, LocalStore
from tests.api.conftest import Served
from tests.api.wire import Content, WriteStream, md, stat, status_of

MiB = 1 << 20


def put(store: LocalStore, data: bytes, ref: str = "put", **labels: str) -> str:
    digest = Digest.from_bytes(data)
    with store.writer(ref, Descriptor(digest, len(data))) as w:
        w.write(data)
        w.commit(len(data), digest, labels or None)
    return str(digest)


def rpc_error(fn: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as exc:
        fn()
    return status_of(exc.value)


def test_info_returns_every_field(content: Content, store: LocalStore) -> None:
    d = put(store, b"info", team="a")
    info = content.Info(c.InfoRequest(digest=d), metadata=md()).info
    assert (info.digest, info.size, dict(info.labels)) == (d, 4, {"team": "a"})
    assert info.HasField("created_at") and info.HasField("updated_at")


def test_info_of_missing_content_is_the_stores_not_found(
    content: Content, store: LocalStore
) -> None:
    d = "sha256:" + hashlib.sha256(b"missing").hexdigest()
    with pytest.raises(Exception) as local:
        store.info(Digest.parse(d))
    code, message = rpc_error(lambda: content.Info(c.InfoRequest(digest=d), metadata=md()))
    assert (code, message) == (grpc.StatusCode.NOT_FOUND, str(local.value))


def test_info_of_a_malformed_digest_is_invalid_argument(content: Content) -> None:
    code, message = rpc_error(
        lambda: content.Info(c.InfoRequest(digest="sha256:xyz"), metadata=md())
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.endswith("invalid checksum digest length: invalid argument")


def test_update_with_field_masks(content: Content, store: LocalStore) -> None:
    d = put(store, b"labels", a="1", b="2")

    def update(labels: dict[str, str], *paths: str, mask: bool = True) -> dict[str, str]:
        req = c.UpdateRequest(info=c.Info(digest=d, labels=labels))
        if mask:
            req.update_mask.CopyFrom(FieldMask(paths=list(paths)))
        return dict(content.Update(req, metadata=md()).info.labels)

    assert update({"c": "3"}, "labels.c") == {"a": "1", "b": "2", "c": "3"}
    assert update({}, "labels.a") == {"b": "2", "c": "3"}  # absent value deletes
    assert update({"only": "x"}, "labels") == {"only": "x"}
    assert update({"all": "y"}, mask=False) == {"all": "y"}  # no mask replaces all
    code, message = rpc_error(lambda: update({}, "size"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert '"size"' in message


def test_update_returns_the_full_info(content: Content, store: LocalStore) -> None:
    d = put(store, b"full")
    req = c.UpdateRequest(
        info=c.Info(digest=d, labels={"k": "v"}), update_mask=FieldMask(paths=["labels.k"])
    )
    info = content.Update(req, metadata=md()).info
    assert (info.digest, info.size) == (d, 4)
    assert info.HasField("created_at") and info.HasField("updated_at")


def test_list_of_an_empty_store_sends_no_message(content: Content) -> None:
    assert list(content.List(c.ListContentRequest(), metadata=md())) == []


@pytest.mark.slow
def test_list_sends_batches_of_at_most_100(content: Content, store: LocalStore) -> None:
    digests = {put(store, b"blob %d" % i, ref=f"r{i}") for i in range(250)}
    batches = list(content.List(c.ListContentRequest(), metadata=md()))
    assert [len(b.info) for b in batches] == [100, 100, 50]
    assert {i.digest for b in batches for i in b.info} == digests


def test_list_filters(content: Content, store: LocalStore) -> None:
    a = put(store, b"a", ref="a", kind="x")
    put(store, b"b", ref="b", kind="y")
    batches = list(content.List(c.ListContentRequest(filters=["labels.kind==x"]), metadata=md()))
    assert [i.digest for b in batches for i in b.info] == [a]
    code, _ = rpc_error(
        lambda: list(content.List(c.ListContentRequest(filters=["labels.=="]), metadata=md()))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_delete(content: Content, store: LocalStore) -> None:
    d = put(store, b"delete me")
    content.Delete(c.DeleteContentRequest(digest=d), metadata=md())
    assert not store.exists(Digest.parse(d))
    code, message = rpc_error(
        lambda: content.Delete(c.DeleteContentRequest(digest=d), metadata=md())
    )
    assert (code, message) == (grpc.StatusCode.NOT_FOUND, f"content digest {d}: not found")


@pytest.fixture
def big(store: LocalStore) -> tuple[str, bytes]:
    data = bytes(range(256)) * (10 * MiB // 256 + 123)
    return put(store, data, ref="big"), data


def read(
    content: Content, digest: str, offset: int = 0, size: int = 0
) -> list[c.ReadContentResponse]:
    req = c.ReadContentRequest(digest=digest, offset=offset, size=size)
    return list(content.Read(req, metadata=md()))


def test_read_streams_chunks_of_at_most_1_mib_with_absolute_offsets(
    content: Content, big: tuple[str, bytes]
) -> None:
    digest, data = big
    msgs = read(content, digest)
    assert all(0 < len(m.data) <= MiB for m in msgs)
    assert [m.offset for m in msgs] == [i * MiB for i in range(len(msgs))]
    assert b"".join(m.data for m in msgs) == data


def test_read_ranges(content: Content, big: tuple[str, bytes]) -> None:
    digest, data = big
    msgs = read(content, digest, offset=MiB + 7, size=2 * MiB)
    assert msgs[0].offset == MiB + 7
    assert b"".join(m.data for m in msgs) == data[MiB + 7 : 3 * MiB + 7]
    tail = read(content, digest, offset=len(data) - 10, size=100)  # clamped to the end
    assert b"".join(m.data for m in tail) == data[-10:]
    negative = read(content, digest, offset=-5, size=3)  # a negative offset reads from 0
    assert (negative[0].offset, negative[0].data) == (0, data[:3])
    assert read(content, digest, offset=len(data)) == []


def test_read_past_the_end_is_out_of_range(content: Content, big: tuple[str, bytes]) -> None:
    digest, data = big
    code, message = rpc_error(lambda: read(content, digest, offset=len(data) + 1))
    assert (code, message) == (
        grpc.StatusCode.OUT_OF_RANGE,
        f"read past object length {len(data)} bytes: out of range",
    )


def test_status_always_carries_the_status(api_server: Served, content: Content) -> None:
    with api_server.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("ingesting"))
        s.half_close()
    resp = content.Status(c.StatusRequest(ref="ingesting"), metadata=md())
    assert resp.HasField("status")
    assert (resp.status.ref, resp.status.offset) == ("ingesting", 0)
    assert resp.status.HasField("started_at") and resp.status.HasField("updated_at")
    code, message = rpc_error(lambda: content.Status(c.StatusRequest(ref="nope"), metadata=md()))
    assert (code, message) == (grpc.StatusCode.NOT_FOUND, "reference nope: not found")


def test_list_statuses_and_abort(content: Content, store: LocalStore) -> None:
    for ref in ("layer-sha256:aa", "layer-sha256:bb", "manifest-sha256:cc"):
        store.writer(ref).close()
    every = content.ListStatuses(c.ListStatusesRequest(filters=[""]), metadata=md())
    assert sorted(s.ref for s in every.statuses) == [
        "layer-sha256:aa",
        "layer-sha256:bb",
        "manifest-sha256:cc",
    ]
    layers = content.ListStatuses(c.ListStatusesRequest(filters=["ref~=^layer-"]), metadata=md())
    assert sorted(s.ref for s in layers.statuses) == ["layer-sha256:aa", "layer-sha256:bb"]
    content.Abort(c.AbortRequest(ref="layer-sha256:aa"), metadata=md())
    left = content.ListStatuses(c.ListStatusesRequest(), metadata=md())
    assert sorted(s.ref for s in left.statuses) == ["layer-sha256:bb", "manifest-sha256:cc"]
    code, message = rpc_error(
        lambda: content.Abort(c.AbortRequest(ref="layer-sha256:aa"), metadata=md())
    )
    assert (code, message) == (grpc.StatusCode.NOT_FOUND, "reference layer-sha256:aa: not found")


CALLS: dict[str, Callable[[Content, tuple[tuple[str, str], ...]], object]] = {
    "Info": lambda k, m: k.Info(c.InfoRequest(digest="sha256:" + "a" * 64), metadata=m),
    "Update": lambda k, m: k.Update(c.UpdateRequest(), metadata=m),
    "List": lambda k, m: list(k.List(c.ListContentRequest(), metadata=m)),
    "Delete": lambda k, m: k.Delete(c.DeleteContentRequest(), metadata=m),
    "Read": lambda k, m: list(k.Read(c.ReadContentRequest(), metadata=m)),
    "Status": lambda k, m: k.Status(c.StatusRequest(ref="r"), metadata=m),
    "ListStatuses": lambda k, m: k.ListStatuses(c.ListStatusesRequest(), metadata=m),
    "Write": lambda k, m: list(k.Write(iter([stat("r")]), metadata=m)),
    "Abort": lambda k, m: k.Abort(c.AbortRequest(ref="r"), metadata=m),
}


@pytest.mark.parametrize("method", sorted(CALLS))
def test_every_rpc_requires_a_namespace(content: Content, method: str) -> None:
    call = CALLS[method]
    assert rpc_error(lambda: call(content, md(None))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "namespace is required: failed precondition",
    )
    assert rpc_error(lambda: call(content, md(""))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "namespace is required: failed precondition",
    )


@pytest.mark.parametrize(
    ("namespace", "why"),
    [
        ("bad ns", "must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"),
        ("-dash", "must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"),
        ("a" * 77, "greater than maximum length (76 characters)"),
    ],
)
def test_an_invalid_namespace_is_invalid_argument(
    content: Content, namespace: str, why: str
) -> None:
    code, message = rpc_error(lambda: CALLS["ListStatuses"](content, md(namespace)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == (f'namespace validation: identifier "{namespace}" {why}: invalid argument')


def test_a_76_character_namespace_is_valid(content: Content) -> None:
    resp = content.ListStatuses(c.ListStatusesRequest(), metadata=md("a" * 76))
    assert list(resp.statuses) == []


def test_blobs_are_shared_across_namespaces(content: Content, store: LocalStore) -> None:
    d = put(store, b"shared")
    for ns in ("default", "k8s.io", "other"):
        assert content.Info(c.InfoRequest(digest=d), metadata=md(ns)).info.size == 6


def test_list_of_heavily_labelled_content_fits_a_default_clients_messages(
    api_server: Served, store: LocalStore
) -> None:
    """40 blobs with nearly 256 KiB of labels each (the bound per object): List sends
    them in messages of about 1 MiB, which a gRPC client with the default 4 MiB receive
    limit takes (one message of 100 infos would be 10 MiB); and an Update past the
    bound is InvalidArgument, leaving the blob as it was."""
    labels = {f"k{i:03d}": "v" * 4000 for i in range(62)}
    digests = []
    for n in range(40):
        data = f"blob {n}".encode()
        digest = Digest.from_bytes(data)
        with store.writer(f"put-{n}", Descriptor(digest, len(data))) as w:
            w.write(data)
            w.commit(len(data), digest, labels=labels)
        digests.append(str(digest))
    with grpc.insecure_channel(api_server.address) as channel:
        replies = list(Content(channel).List(c.ListContentRequest(), metadata=md()))
        assert sorted(i.digest for r in replies for i in r.info) == sorted(digests)
        assert len(replies) > 1 and max(r.ByteSize() for r in replies) < 2 << 20
        more = {f"x{i:03d}": "v" * 4000 for i in range(10)}
        with pytest.raises(grpc.RpcError) as exc:
            Content(channel).Update(
                c.UpdateRequest(info=c.Info(digest=digests[0], labels=more),
                                update_mask=FieldMask(paths=[f"labels.{k}" for k in more])),
                metadata=md(),
            )  # fmt: skip
        assert status_of(exc.value)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(store.info(Digest.parse(digests[0])).labels) == labels
