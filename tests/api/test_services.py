"""Leases, Images, Introspection, Version and Namespaces on the wire: what ``ctr``
needs, with containerd's messages and never an empty ``CreateResponse.lease``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.field_mask_pb2 import FieldMask

from ingestq.api import rpc
from ingestq.api.convert import from_timestamp
from ingestq.api.proto.containerd.services.images.v1 import images_pb2 as im
from ingestq.api.proto.containerd.services.introspection.v1 import introspection_pb2 as intro
from ingestq.api.proto.containerd.services.leases.v1 import leases_pb2 as le
from ingestq.api.proto.containerd.services.namespaces.v1 import namespace_pb2 as ns
from ingestq.api.proto.containerd.services.version.v1 import version_pb2
from ingestq.api.proto.containerd.types import descriptor_pb2
from tests.api.conftest import Served
from tests.api.wire import INTROSPECTION, Images, Leases, md, status_of

SLACK = timedelta(seconds=2)
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def rpc_error(fn: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as exc:
        fn()
    return status_of(exc.value)


@pytest.fixture
def channel(api_server: Served) -> Iterator[grpc.Channel]:
    with api_server.channel() as ch:
        yield ch


# leases --------------------------------------------------------------------------------
def test_lease_create_always_returns_the_lease(channel: grpc.Channel) -> None:
    leases = Leases(channel)
    before = datetime.now(UTC)
    resp = leases.Create(le.CreateRequest(id="fetch-1", labels={"a": "b"}), metadata=md())
    assert resp.HasField("lease")
    assert (resp.lease.id, dict(resp.lease.labels)) == ("fetch-1", {"a": "b"})
    assert before - SLACK <= from_timestamp(resp.lease.created_at) <= datetime.now(UTC) + SLACK
    generated = leases.Create(le.CreateRequest(), metadata=md()).lease
    assert generated.id  # an empty id gets a generated one


def test_lease_errors_and_listing(channel: grpc.Channel) -> None:
    leases = Leases(channel)
    leases.Create(le.CreateRequest(id="x", labels={"k": "v"}), metadata=md())
    leases.Create(le.CreateRequest(id="y"), metadata=md())
    assert rpc_error(lambda: leases.Create(le.CreateRequest(id="x"), metadata=md())) == (
        grpc.StatusCode.ALREADY_EXISTS,
        'lease "x": already exists',
    )
    listed = leases.List(le.ListRequest(), metadata=md()).leases
    assert sorted(lease.id for lease in listed) == ["x", "y"]
    only = leases.List(le.ListRequest(filters=["labels.k==v"]), metadata=md()).leases
    assert [lease.id for lease in only] == ["x"]
    assert list(leases.List(le.ListRequest(), metadata=md("other")).leases) == []  # per ns
    leases.Delete(le.DeleteRequest(id="x", sync=True), metadata=md())
    assert rpc_error(lambda: leases.Delete(le.DeleteRequest(id="x"), metadata=md())) == (
        grpc.StatusCode.NOT_FOUND,
        'lease "x": not found',
    )


def test_lease_resources(channel: grpc.Channel) -> None:
    leases = Leases(channel)
    leases.Create(le.CreateRequest(id="r"), metadata=md())
    res = le.Resource(id=D1, type="content")
    leases.AddResource(le.AddResourceRequest(id="r", resource=res), metadata=md())
    listed = leases.ListResources(le.ListResourcesRequest(id="r"), metadata=md()).resources
    assert [(x.type, x.id) for x in listed] == [("content", D1)]
    leases.DeleteResource(le.DeleteResourceRequest(id="r", resource=res), metadata=md())
    assert (
        list(leases.ListResources(le.ListResourcesRequest(id="r"), metadata=md()).resources) == []
    )
    bad = le.Resource(id="x", type="containers")
    code, _ = rpc_error(
        lambda: leases.AddResource(le.AddResourceRequest(id="r", resource=bad), metadata=md())
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_expired_leases_disappear(channel: grpc.Channel) -> None:
    leases = Leases(channel)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    leases.Create(
        le.CreateRequest(id="old", labels={"containerd.io/gc.expire": past}), metadata=md()
    )
    assert list(leases.List(le.ListRequest(), metadata=md()).leases) == []


def test_leases_need_a_namespace(channel: grpc.Channel) -> None:
    leases = Leases(channel)
    assert rpc_error(lambda: leases.Create(le.CreateRequest(id="n"), metadata=md(None))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "namespace is required: failed precondition",
    )


def test_a_damaged_lease_record_is_data_loss(api_server: Served, channel: grpc.Channel) -> None:
    leases = Leases(channel)
    leases.Create(le.CreateRequest(id="ok"), metadata=md())
    (api_server.root / "leases" / "default.json").write_text('["not", "a", "map"]')
    code, message = rpc_error(lambda: leases.List(le.ListRequest(), metadata=md()))
    assert code == grpc.StatusCode.DATA_LOSS
    assert message.startswith("leases of default are malformed")


# images --------------------------------------------------------------------------------
def image(name: str, digest: str = D1, **labels: str) -> im.Image:
    return im.Image(
        name=name,
        labels=labels,
        target=descriptor_pb2.Descriptor(media_type=MANIFEST, digest=digest, size=123),
    )


def test_images_create_get_list_delete(api_server: Served, channel: grpc.Channel) -> None:
    images = Images(channel)
    created = images.Create(
        im.CreateImageRequest(image=image("reg/app:1", team="a")), metadata=md()
    ).image
    assert created.HasField("created_at") and created.HasField("updated_at")
    got = images.Get(im.GetImageRequest(name="reg/app:1"), metadata=md()).image
    assert (got.name, got.target.digest, got.target.size, dict(got.labels)) == (
        "reg/app:1",
        D1,
        123,
        {"team": "a"},
    )
    assert from_timestamp(got.created_at) == from_timestamp(created.created_at)
    images.Create(im.CreateImageRequest(image=image("reg/app:2", D2)), metadata=md())
    names = [i.name for i in images.List(im.ListImagesRequest(), metadata=md()).images]
    assert sorted(names) == ["reg/app:1", "reg/app:2"]
    filtered = images.List(
        im.ListImagesRequest(filters=[f"target.digest=={D2}"]), metadata=md()
    ).images
    assert [i.name for i in filtered] == ["reg/app:2"]
    assert rpc_error(
        lambda: images.Create(im.CreateImageRequest(image=image("reg/app:1")), metadata=md())
    ) == (grpc.StatusCode.ALREADY_EXISTS, 'image "reg/app:1": already exists')
    images.Delete(im.DeleteImageRequest(name="reg/app:1"), metadata=md())
    assert rpc_error(lambda: images.Get(im.GetImageRequest(name="reg/app:1"), metadata=md())) == (
        grpc.StatusCode.NOT_FOUND,
        'image "reg/app:1": not found',
    )


def test_images_are_recorded_in_the_oci_index(api_server: Served, channel: grpc.Channel) -> None:
    Images(channel).Create(im.CreateImageRequest(image=image("reg/app:1", team="a")), metadata=md())
    index = json.loads((api_server.root / "index.json").read_text())
    [entry] = index["manifests"]
    assert (entry["digest"], entry["size"], entry["mediaType"]) == (D1, 123, MANIFEST)
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "reg/app:1"
    assert entry["annotations"]["io.ingestq.image.label.team"] == "a"


def test_image_update_with_and_without_masks(channel: grpc.Channel) -> None:
    images = Images(channel)
    images.Create(im.CreateImageRequest(image=image("app", a="1", b="2")), metadata=md())

    def update(img: im.Image, *paths: str, mask: bool = True) -> im.Image:
        req = im.UpdateImageRequest(image=img)
        if mask:
            req.update_mask.CopyFrom(FieldMask(paths=list(paths)))
        return images.Update(req, metadata=md()).image

    partial = im.Image(name="app", labels={"c": "3"})
    assert dict(update(partial, "labels.c").labels) == {"a": "1", "b": "2", "c": "3"}
    assert update(partial, "labels.c").target.digest == D1  # untouched without "target"
    replaced = update(image("app", D2, z="9"), mask=False)  # no mask: labels and target
    assert (replaced.target.digest, dict(replaced.labels)) == (D2, {"z": "9"})
    assert rpc_error(lambda: update(partial, "name")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        'cannot update "name" field on image "app": invalid argument',
    )
    assert rpc_error(lambda: update(image("ghost"), mask=False))[0] == grpc.StatusCode.NOT_FOUND


def test_image_validation(channel: grpc.Channel) -> None:
    images = Images(channel)
    no_size = im.Image(name="x", target=descriptor_pb2.Descriptor(media_type=MANIFEST, digest=D1))
    assert rpc_error(
        lambda: images.Create(im.CreateImageRequest(image=no_size), metadata=md())
    ) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Target.Size must be greater than zero: invalid argument",
    )
    no_name = image("")
    assert rpc_error(lambda: images.Create(im.CreateImageRequest(image=no_name), metadata=md()))[
        0
    ] == (grpc.StatusCode.INVALID_ARGUMENT)


# introspection, version, namespaces ------------------------------------------------------
def test_introspection_server_answers_without_deprecations(channel: grpc.Channel) -> None:
    server = rpc.unary_unary(channel, INTROSPECTION, "Server", Empty, intro.ServerResponse)
    resp = server(Empty(), metadata=md())
    assert resp.uuid and resp.pid > 0
    assert list(resp.deprecations) == []


def test_introspection_lists_the_services_as_plugins(channel: grpc.Channel) -> None:
    plugins = rpc.unary_unary(
        channel, INTROSPECTION, "Plugins", intro.PluginsRequest, intro.PluginsResponse
    )
    grpc_ids = plugins(intro.PluginsRequest(filters=["type==io.containerd.grpc.v1"]), metadata=md())
    assert sorted(p.id for p in grpc_ids.plugins) == [
        "content",
        "images",
        "introspection",
        "leases",
        "namespaces",
        "version",
    ]


def test_version(channel: grpc.Channel) -> None:
    service = version_pb2.DESCRIPTOR.services_by_name["Version"]
    version = rpc.unary_unary(channel, service, "Version", Empty, version_pb2.VersionResponse)
    assert version(Empty()).version.startswith("ingestq ")


def test_namespaces_get_and_list(channel: grpc.Channel) -> None:
    service = ns.DESCRIPTOR.services_by_name["Namespaces"]
    get = rpc.unary_unary(channel, service, "Get", ns.GetNamespaceRequest, ns.GetNamespaceResponse)
    assert get(ns.GetNamespaceRequest(name="k8s.io")).namespace.name == "k8s.io"
    listing = rpc.unary_unary(
        channel, service, "List", ns.ListNamespacesRequest, ns.ListNamespacesResponse
    )
    assert "default" in [n.name for n in listing(ns.ListNamespacesRequest()).namespaces]
