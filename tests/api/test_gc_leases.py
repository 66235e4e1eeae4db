"""gc and containerd's leases through the gRPC API: content written under a lease
survives gc while the lease lives and goes once it is deleted; the same content written
without a lease, root label or image is swept; a ``ctr content fetch`` into a served
store stays whole through gc, and goes after ``ingestq images rm``."""

from __future__ import annotations

import random

import grpc
import pytest

from ingestq.api.proto.containerd.services.leases.v1 import leases_pb2 as le
from ingestq.store.gc import check_image, collect
from ingestq.store.images import ImageIndex
from ingestq.store.local import LocalStore
from tests.api.conftest import Served
from tests.api.wire import Leases, WriteStream, commit, md, stat
from tests.servers.oci import make_tar_layer, push_image
from tests.servers.registry import Registry


def sha(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write(served: Served, ref: str, data: bytes, lease: str | None = None) -> None:
    with served.channel() as ch:
        s = WriteStream(ch, md("default", lease=lease))
        s.send(stat(ref))
        s.send(commit(0, data=data, expected=sha(data)))
        s.half_close()


def test_content_under_a_lease_survives_gc_until_the_lease_is_deleted(
    serve_process: Served,
) -> None:
    with serve_process.channel() as ch:
        Leases(ch).Create(le.CreateRequest(id="pull-1"), metadata=md())
    _write(serve_process, "leased", b"leased content", lease="pull-1")
    _write(serve_process, "bare", b"bare content")
    store = LocalStore(serve_process.root, fsync=False)
    removed = {d for d, _ in collect(store).blobs}
    assert removed == {sha(b"bare content")}
    assert store.exists(sha(b"leased content"))
    with serve_process.channel() as ch:
        Leases(ch).Delete(le.DeleteRequest(id="pull-1"), metadata=md())
    assert {d for d, _ in collect(store).blobs} == {sha(b"leased content")}


def test_existing_content_written_again_under_a_lease_joins_it(api_server: Served) -> None:
    _write(api_server, "first", b"shared bytes")
    with api_server.channel() as ch:
        Leases(ch).Create(le.CreateRequest(id="L"), metadata=md())
        s = WriteStream(ch, md("default", lease="L"))
        with pytest.raises(grpc.RpcError) as exc:  # ctr takes AlreadyExists as success
            s.send(stat("second", expected=sha(b"shared bytes")))
        assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert api_server.store is not None
    assert collect(api_server.store).blobs == ()
    assert api_server.store.exists(sha(b"shared bytes"))


@pytest.mark.slow
def test_a_ctr_fetch_stays_whole_through_gc_and_goes_after_images_rm(
    registry: Registry, serve_process: Served
) -> None:
    layers = [
        make_tar_layer({"a.txt": b"hello"}),
        make_tar_layer({"b.bin": random.Random(3).randbytes(1 << 20)}, compress=True),
    ]
    manifest = push_image(registry, "library/kept", "v1", layers)
    ref = f"{registry.host}/library/kept:v1"
    done = serve_process.ctr("content", "fetch", "--plain-http", ref, timeout=120)
    assert done.returncode == 0, done.stderr
    store = LocalStore(serve_process.root, fsync=False)
    assert collect(store).blobs == ()
    assert check_image(store, ref).complete
    ImageIndex(serve_process.root).remove(ref)
    removed = {d for d, _ in collect(store).blobs}
    assert {manifest, *(sha(layer) for layer in layers)} <= removed
    assert not store.exists(manifest)
