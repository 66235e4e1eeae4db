"""The gRPC server checks request fields before touching the store, with the store's
rules: a digest with a trailing newline is InvalidArgument (not NotFound) for Info,
Delete and Read; Write checks its ref and labels before writing; Update its labels."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from ingestq.api.proto.containerd.services.content.v1 import content_pb2 as c
from ingestq.store import Descriptor, Digest, LocalStore
from tests.api.conftest import Served
from tests.api.wire import Content, WriteStream, commit, md, stat, status_of, write

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def committed(store: LocalStore, data: bytes) -> str:
    digest = Digest.from_bytes(data)
    with store.writer("put", Descriptor(digest, len(data))) as w:
        w.write(data)
        w.commit(len(data), digest)
    return str(digest)


def newline_digests(store: LocalStore) -> list[str]:
    """Digests that are one newline away from valid, one of committed content."""
    present = committed(store, b"present")
    return [present + "\n", "sha256:" + hashlib.sha256(b"x").hexdigest()[:63] + "\n"]


def test_info_and_delete_of_a_digest_with_a_newline_are_invalid_argument(
    content: Content, store: LocalStore
) -> None:
    def calls(digest: str) -> list[Callable[[], object]]:
        return [
            lambda: content.Info(c.InfoRequest(digest=digest), metadata=md()),
            lambda: content.Delete(c.DeleteContentRequest(digest=digest), metadata=md()),
            lambda: list(content.Read(c.ReadContentRequest(digest=digest), metadata=md())),
        ]

    for digest in newline_digests(store):
        for call in calls(digest):
            with pytest.raises(grpc.RpcError) as exc:
                call()
            code, message = status_of(exc.value)
            assert code == INVALID, message
            assert "invalid checksum digest" in message
    assert len(list(store.walk())) == 1  # nothing deleted


def test_write_with_a_ref_ending_in_a_newline_is_invalid_argument(
    api_server: Served, store: LocalStore
) -> None:
    with api_server.channel() as ch:
        s = WriteStream(ch)
        with pytest.raises(grpc.RpcError) as exc:
            s.send(stat("layer-sha256:abc\n"))
        assert status_of(exc.value)[0] == INVALID
    assert store.list_statuses() == []
    assert list((api_server.root / "ingest").iterdir()) == []


def test_write_labels_are_checked_before_the_data_is_written(
    api_server: Served, store: LocalStore
) -> None:
    data = b"some bytes"
    with api_server.channel() as ch:
        s = WriteStream(ch)
        s.send(stat("labelled"))
        s.send(write(0, data[:4]))
        for labels in ({"team": "v" * 10_000}, {"team\n": "a"}):
            with pytest.raises(grpc.RpcError) as exc:
                s.send(commit(4, len(data), data=data[4:], labels=labels))
            assert status_of(exc.value)[0] == INVALID
            s = WriteStream(ch)
            assert s.send(stat("labelled")).offset == 4  # the commit's data was not written
        done = s.send(commit(4, len(data), data=data[4:], labels={"team": "a"}))
        assert done.digest == str(Digest.from_bytes(data))
    assert dict(store.info(Digest.from_bytes(data)).labels) == {"team": "a"}


@pytest.mark.parametrize(
    ("labels", "paths"),
    [({"team\n": "a"}, ["labels"]), ({"team": "a", "big": "v" * 10_000}, ["labels.team"])],
    ids=["key with a newline", "10 KB label outside the mask"],
)
def test_update_labels_are_checked(
    content: Content, store: LocalStore, labels: dict[str, str], paths: list[str]
) -> None:
    digest = committed(store, b"update me")
    with pytest.raises(grpc.RpcError) as exc:
        content.Update(
            c.UpdateRequest(info=c.Info(digest=digest, labels=labels),
                            update_mask=FieldMask(paths=paths)),
            metadata=md(),
        )  # fmt: skip
    assert status_of(exc.value)[0] == INVALID
    assert dict(store.info(Digest.parse(digest)).labels) == {}


@pytest.mark.parametrize(
    "stamp", [Timestamp(seconds=2**60), Timestamp(seconds=10, nanos=2_000_000_000)]
)
def test_an_update_with_a_timestamp_out_of_range_is_invalid_argument(
    content: Content, store: LocalStore, stamp: Timestamp
) -> None:
    digest = committed(store, b"update my time")
    with pytest.raises(grpc.RpcError) as exc:
        content.Update(
            c.UpdateRequest(info=c.Info(digest=digest, updated_at=stamp, labels={"a": "b"}),
                            update_mask=FieldMask(paths=["labels.a"])),
            metadata=md(),
        )  # fmt: skip
    code, message = status_of(exc.value)
    assert code == INVALID, message
    assert "timestamp" in message
    assert dict(store.info(Digest.parse(digest)).labels) == {}
