"""The errdefs <-> gRPC boundary: every error a handler raises leaves through
``errdefs.to_grpc`` (kind -> code, full message; anything else Unknown with its text),
and the client store turns it back with ``errdefs.from_grpc`` so the same class and
message come out on the client side."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from ingestq import errdefs
from ingestq.api.client import GrpcStore
from ingestq.api.proto.containerd.services.content.v1 import content_pb2 as c
from ingestq.api.server import ApiServer, Listen
from ingestq.store import Digest, Info, LocalStore
from tests.api.conftest import short_dir
from tests.api.wire import Content, md

DIGEST = "sha256:" + "b" * 64


class RaisingStore(LocalStore):
    """A LocalStore whose ``info`` raises whatever the test sets."""

    error: BaseException = RuntimeError("unset")

    def info(self, digest: Digest | str) -> Info:
        raise self.error


@pytest.fixture
def raising(tmp_path: Path) -> Iterator[tuple[RaisingStore, str]]:
    store = RaisingStore(tmp_path / "root", fsync=False)
    server = ApiServer(store, tmp_path / "root")
    sockdir = short_dir()
    address = server.listen(Listen(unix=sockdir / "s.sock"))
    server.start()
    yield store, address
    server.stop(0)
    shutil.rmtree(sockdir, ignore_errors=True)


def raw_info(address: str) -> grpc.RpcError:
    with grpc.insecure_channel(address) as ch, pytest.raises(grpc.RpcError) as exc:
        Content(ch).Info(c.InfoRequest(digest=DIGEST), metadata=md())
    return exc.value


@pytest.mark.parametrize("kind", sorted(errdefs.KINDS), ids=str)
def test_each_kind_crosses_as_its_code_with_the_full_message(
    raising: tuple[RaisingStore, str], kind: str
) -> None:
    store, address = raising
    cls = errdefs.KINDS[kind]
    store.error = cls("content thing")
    err = raw_info(address)
    assert err.code().value[0] == cls.grpc_code
    assert err.details() == str(store.error)
    with GrpcStore(address) as client, pytest.raises(errdefs.ErrdefsError) as back:
        client.info(DIGEST)
    assert type(back.value) is cls
    assert str(back.value) == str(store.error)


def test_a_plain_exception_is_unknown_with_its_message(
    raising: tuple[RaisingStore, str],
) -> None:
    store, address = raising
    store.error = RuntimeError("disk on fire")
    err = raw_info(address)
    assert (err.code(), err.details()) == (
        grpc.StatusCode.UNKNOWN,
        "disk on fire",
    )
    with GrpcStore(address) as client, pytest.raises(errdefs.Unknown) as back:
        client.info(DIGEST)
    assert str(back.value) == "disk on fire: unknown"  # containerd's FromGRPC rule


def test_a_wrapped_kind_keeps_its_code_and_context(raising: tuple[RaisingStore, str]) -> None:
    store, address = raising
    store.error = errdefs.wrap(errdefs.NotFound("content x"), "failed to read")
    err = raw_info(address)
    assert (err.code(), err.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "failed to read: content x: not found",
    )
    with GrpcStore(address) as client, pytest.raises(errdefs.NotFound) as back:
        client.info(DIGEST)
    assert str(back.value) == "failed to read: content x: not found"


@pytest.mark.parametrize("echoed", ["x" * 20_000, "é" * 4_000, "%" * 5_000])
def test_a_message_echoing_a_huge_input_keeps_its_code(
    raising: tuple[RaisingStore, str], echoed: str
) -> None:
    """gRPC sends the message in a header, percent-encoded (``é`` and ``%`` triple):
    whole, a message echoing a long digest, ref or filter broke grpcio's header limit,
    and the client saw ResourceExhausted instead of the kind. It is cut in the middle,
    its kind kept at the end."""
    store, address = raising
    store.error = errdefs.InvalidArgument(f"digest {echoed!r} is malformed")
    err = raw_info(address)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    details = err.details()
    assert len(details.encode()) <= 1024
    assert details.startswith("digest '") and details.endswith(" [...]: invalid argument")
    with GrpcStore(address) as client, pytest.raises(errdefs.InvalidArgument):
        client.info(DIGEST)
