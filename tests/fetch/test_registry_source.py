"""The registry client and blob source against a real ``docker-registry``: manifests of
every schema 2 type, errors with their kinds and evidence, verification, Range resume
and the 416 rules, Retry-After, redirects to blob storage, TLS options."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from ingestq import errdefs
from ingestq.fetch import manifests
from ingestq.fetch.options import FetchOptions
from ingestq.fetch.reference import parse_reference
from ingestq.fetch.registry.client import (
    RegistryBlobSource,
    RegistryClient,
    RegistryImage,
    RegistryOptions,
    source_from_registry_spec,
)
from ingestq.fetch.specs import source_from_spec
from ingestq.ingest.attempt import ingest_once
from ingestq.ingest.request import IngestRequest
from ingestq.ingest.wait import ingest
from ingestq.store.digest import Digest
from ingestq.store.local import LocalStore
from ingestq.store.values import Descriptor
from tests.servers import oci
from tests.servers.registry import Registry
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.registry_helpers import (
    FrontFactory,
    MiB,
    make_tls,
    push_multiplatform,
)
from tests.tasks.registry_helpers import fronts_fixture as fronts_fixture


def _desc(d: oci.Descriptor) -> Descriptor:
    return Descriptor.from_oci(d.to_json())


def _push_blob(registry: Registry, repo: str, data: bytes) -> Descriptor:
    digest = oci.push_blob(registry, repo, data)
    return Descriptor(Digest.parse(digest), len(data), "application/vnd.oci.image.layer.v1.tar")


@pytest.mark.parametrize("flavor", ["oci", "docker"])
def test_resolve_and_fetch_manifests_and_indexes_of_both_flavors(
    registry: Registry, fronts: FrontFactory, flavor: oci.Flavor
) -> None:
    front = fronts(registry.url)
    image = oci.build_image([b"layer"], flavor=flavor)
    oci.push_built_image(registry, "single", image, "v1")
    index = push_multiplatform(registry, "multi", "v1", flavor=flavor)
    with RegistryClient() as client:
        ref = parse_reference(f"{front.host}/single:v1")
        desc = client.resolve(ref)
        assert desc == _desc(image.descriptor).__class__(
            Digest.parse(image.digest), len(image.manifest), image.descriptor.media_type
        )
        assert client.fetch_manifest(ref, desc) == image.manifest
        by_digest = client.resolve(ref.with_digest(desc.digest).with_tag(None).blob(desc.digest))
        assert by_digest == desc
        multi = parse_reference(f"{front.host}/multi:v1")
        idesc = client.resolve(multi)
        assert idesc.media_type == index.descriptor.media_type
        assert manifests.is_index(idesc.media_type)
        assert client.fetch_manifest(multi, idesc) == index.manifest
    accepts = {r.headers.get("accept") for r in front.requests(contains="/manifests/")}
    assert accepts == {manifests.MANIFEST_ACCEPT}


def test_unknown_tag_repository_and_blob_are_not_found_with_evidence(registry: Registry) -> None:
    oci.push_image(registry, "app", "v1", [b"x"])
    with RegistryClient() as client:
        with pytest.raises(errdefs.NotFound) as tag:
            client.resolve(parse_reference(f"{registry.host}/app:nope"))
        assert tag.value.details["code"] == "MANIFEST_UNKNOWN"
        assert tag.value.details["status"] == "404"
        assert tag.value.details["url"].endswith("/v2/app/manifests/nope")
        assert "MANIFEST_UNKNOWN" in tag.value.details["body"]
        assert str(tag.value).endswith(": not found")
        with pytest.raises(errdefs.NotFound):
            client.resolve(parse_reference(f"{registry.host}/ghost:v1"))
        missing = Descriptor(Digest.from_bytes(b"never pushed"), 12)
        ref = parse_reference(f"{registry.host}/app:v1")
        with pytest.raises(errdefs.NotFound) as blob:
            client.open_blob(ref, missing)
        assert blob.value.details["code"] == "BLOB_UNKNOWN"
        assert not client.blob_exists(ref, missing)


def test_a_corrupted_manifest_or_a_wrong_size_is_data_loss(
    registry: Registry, fronts: FrontFactory
) -> None:
    front = fronts(registry.url)
    image = oci.build_image([b"payload" * 10])
    oci.push_built_image(registry, "app", image, "v1")
    front.rule(r"^GET /v2/app/manifests/", corrupt=True)
    ref = parse_reference(f"{front.host}/app:v1")
    with RegistryClient() as client:
        desc = client.resolve(ref)
        with pytest.raises(errdefs.DataLoss, match="hashes to"):
            client.fetch_manifest(ref, desc)
        layer = _desc(image.layer_descriptors[0])
        wrong = Descriptor(layer.digest, layer.size + 1, layer.media_type)
        with pytest.raises(errdefs.DataLoss, match="expected"):
            client.open_blob(ref, wrong)


def test_range_resume_206_and_the_416_rules(registry: Registry) -> None:
    data = os.urandom(300_000)
    desc = _push_blob(registry, "app", data)
    ref = parse_reference(f"{registry.host}/app")
    with RegistryClient() as client:
        full = client.open_blob(ref, desc)
        assert (full.start, full.size) == (0, len(data))
        assert full.stream.read(-1) == data
        part = client.open_blob(ref, desc, 123_456)
        assert (part.start, part.size) == (123_456, len(data))
        assert part.stream.read(-1) == data[123_456:]
        at_end = client.open_blob(ref, desc, len(data))  # 416, body never read
        assert (at_end.start, at_end.size) == (len(data), len(data))
        assert at_end.stream.read(10) == b""
        beyond = client.open_blob(ref, desc, len(data) + 10)  # 416, then from 0
        assert beyond.start == 0
        assert beyond.stream.read(-1) == data
    gets = registry.blob_gets(str(desc.digest), "app")
    assert [e.status for e in gets] == [200, 206, 416, 416, 200]


def test_the_ingest_core_resumes_a_registry_blob_with_range(
    registry: Registry, fronts: FrontFactory, tmp_path: Path
) -> None:
    front = fronts(registry.url)
    data = os.urandom(3 * MiB)
    desc = _push_blob(registry, "app", data)
    store = LocalStore(tmp_path / "store", fsync=False)
    ref = manifests.ref_key(desc)
    with store.writer(ref, desc) as w:
        w.write(data[:MiB])  # an earlier attempt got this far
    spec = {
        "type": "registry",
        "ref": f"{front.host}/app@{desc.digest}",
        "size": desc.size,
        "media_type": desc.media_type,
    }
    source = source_from_spec(spec, FetchOptions())
    assert isinstance(source, RegistryBlobSource)
    from ingestq.ingest.request import IngestRequest

    request = IngestRequest(spec, ref, desc.digest, desc.size, desc.media_type)
    result = ingest(store, source, request)
    assert result.resumed_from == MiB and result.bytes_fetched == 2 * MiB
    assert (tmp_path / "store" / "blobs" / "sha256" / desc.digest.encoded).read_bytes() == data
    (blob_get,) = front.requests("GET", "/blobs/")
    assert blob_get.headers["range"] == f"bytes={MiB}-"
    assert blob_get.headers["accept-encoding"] == "identity"
    assert blob_get.status == 206


def test_registry_specs_are_validated() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"type": "registry", "ref": "127.0.0.1:1/app:v1"}, "needs @<digest>"),
        ({"type": "registry", "ref": 5}, "needs a ref"),
        ({"type": "registry", "ref": "h:1/a@sha256:" + "0" * 64, "size": -1}, "natural"),
        (
            {"type": "registry", "ref": "h:1/a@sha256:" + "0" * 64, "options": {"x": 1}},
            "unknown registry options",
        ),
    ]
    for bad, message in cases:
        with pytest.raises(errdefs.InvalidArgument, match=message):
            source_from_registry_spec(bad, FetchOptions())


def test_retry_after_is_honoured_in_place_up_to_a_bound(
    registry: Registry, fronts: FrontFactory
) -> None:
    front = fronts(registry.url)
    desc = _push_blob(registry, "app", b"hello registry")
    busy = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
    front.rule(r"^GET /v2/app/blobs/", responses=[(429, {"Retry-After": "1"}, busy)])
    slept: list[float] = []
    ref = parse_reference(f"{front.host}/app")
    with RegistryClient(sleep=slept.append) as client:
        assert client.open_blob(ref, desc).stream.read(-1) == b"hello registry"
    assert slept == [1.0]
    front.rule(r"^GET /v2/app/blobs/", responses=[(429, {"Retry-After": "120"}, busy)] * 1)
    front.rules.reverse()  # the new rule first
    with RegistryClient(sleep=slept.append) as client, pytest.raises(errdefs.Unavailable) as err:
        client.open_blob(ref, desc)
    assert err.value.details["retry_after"] == "120"
    assert err.value.details["code"] == "TOOMANYREQUESTS"
    front.rule(r"^(HEAD|GET) /v2/app/manifests/", responses=[(503, {}, b"down")] * 2)
    front.rules.insert(0, front.rules.pop())
    with RegistryClient() as client, pytest.raises(errdefs.Unavailable, match="503"):
        client.resolve(parse_reference(f"{front.host}/app:v1"))


def test_redirects_to_blob_storage_drop_authorization(
    registry_token_auth: Registry, fronts: FrontFactory
) -> None:
    reg = registry_token_auth
    data = os.urandom(200_000)
    digest = oci.push_blob(reg, "app", data)
    oci.push_image(reg, "app", "v1", [b"small"])
    # "Storage" is another origin (localhost, not 127.0.0.1) with its own pre-signed
    # style access to the same registry.
    storage = fronts(reg.url, host_name="localhost", upstream_headers=reg.auth_headers())
    front = fronts(reg.url)
    front.rule(r"^GET /v2/app/blobs/", redirect_to=storage.url)
    ref = parse_reference(f"{front.host}/app")
    desc = Descriptor(Digest.parse(digest), len(data))
    with RegistryClient() as client:
        client.resolve(ref.with_tag("v1"))  # the token flow runs here
        assert client.open_blob(ref, desc).stream.read(-1) == data
    redirected = [r for r in front.requests("GET", "/blobs/") if r.status == 307]
    assert redirected and redirected[-1].headers["authorization"].startswith("Bearer ")
    (stored,) = storage.requests("GET", "/blobs/")
    assert "authorization" not in stored.headers
    assert stored.status == 200


def test_schemes_follow_loopback_and_plain_http() -> None:
    with RegistryClient() as auto:
        assert auto.base_url(parse_reference("127.0.0.1:5000/a")) == "http://127.0.0.1:5000"
        assert auto.base_url(parse_reference("localhost/a")) == "http://localhost"
        assert auto.base_url(parse_reference("ghcr.io/a")) == "https://ghcr.io"
        assert auto.base_url(parse_reference("ubuntu")) == "https://registry-1.docker.io"
    with RegistryClient(RegistryOptions(plain_http=True)) as plain:
        assert plain.base_url(parse_reference("reg.example:80/a")) == "http://reg.example:80"
    with RegistryClient(RegistryOptions(plain_http=False)) as tls:
        assert tls.base_url(parse_reference("127.0.0.1:5000/a")) == "https://127.0.0.1:5000"


def test_tls_with_a_ca_bundle_without_it_and_skipping_verification(
    registry: Registry, fronts: FrontFactory, tmp_path: Path
) -> None:
    pki = make_tls(tmp_path / "pki")
    front = fronts(registry.url, host_name="localhost", tls=(pki["cert"], pki["key"]))
    digest = oci.push_image(registry, "app", "v1", [b"tls"])
    ref = parse_reference(f"{front.host}/app:v1")
    trusted = RegistryOptions(plain_http=False, ca_bundle=str(pki["ca"]))
    with RegistryClient(trusted) as client:
        assert str(client.resolve(ref).digest) == digest
    with (
        RegistryClient(RegistryOptions(plain_http=False)) as client,
        pytest.raises(errdefs.FailedPrecondition, match="certificate verification failed"),
    ):
        client.resolve(ref)
    skip = RegistryOptions(plain_http=False, insecure_skip_verify=True)
    with RegistryClient(skip) as client:
        assert str(client.resolve(ref).digest) == digest
    with pytest.raises(errdefs.InvalidArgument, match="TLS configuration"):
        RegistryClient(RegistryOptions(ca_bundle=str(tmp_path / "missing.pem")))


def test_registry_image_hands_out_sources_and_specs(registry: Registry) -> None:
    image = oci.build_image([b"abc" * 1000])
    oci.push_built_image(registry, "app", image, "v2")
    with RegistryClient(RegistryOptions(plain_http=True)) as client:
        img = RegistryImage(client, f"{registry.host}/app:v2")
        assert img.name == f"{registry.host}/app:v2"
        assert img.distribution_source == (registry.host, "app")
        root = img.resolve()
        layer = _desc(image.layer_descriptors[0])
        spec = img.spec(layer)
        assert spec["ref"] == f"{registry.host}/app@{layer.digest}"
        assert spec["options"]["plain_http"] is True
        source = img.blob_source(layer)
        assert source.name == f"{registry.host}/app@{layer.digest}"
        opened = source.open()
        assert hashlib.sha256(opened.stream.read(-1)).hexdigest() == layer.digest.encoded
        manifest_source = img.blob_source(root)
        assert json.loads(manifest_source.open().stream.read(-1))["layers"]


LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


def _served_blob(blob_server: BlobServer, b: Behaviour) -> IngestRequest:
    """``b`` served as blob ``app@<digest>`` of a registry at the blob server (a real
    HTTP server that misbehaves on purpose), as an ingest request of its spec."""
    blob_server.add(f"/v2/app/blobs/{b.digest}", b)
    host = blob_server.url.removeprefix("http://")
    spec = {"type": "registry", "ref": f"{host}/app@{b.digest}", "size": len(b.data),
            "media_type": LAYER_TYPE}  # fmt: skip
    return IngestRequest(spec, f"layer-{b.digest}", Digest.parse(b.digest), len(b.data), LAYER_TYPE)


def test_a_slow_registry_blob_is_unavailable_by_the_low_speed_rule_from_fetch_options(
    blob_server: BlobServer, tmp_path: Path
) -> None:
    b = Behaviour(data=os.urandom(4096), trickle=(1, 0.25))
    request = _served_blob(blob_server, b)
    store = LocalStore(tmp_path / "store", fsync=False, small_blob_max=0)
    options = FetchOptions(http_low_speed_limit=1024, http_low_speed_time=2)
    with pytest.raises(errdefs.Unavailable, match="slower than 1024 bytes/s over 2 s"):
        ingest_once(store, source_from_spec(request.source, options), request)
    kept = store.status(request.ref).offset
    assert kept > 0
    b.trickle = None
    result = ingest_once(store, source_from_spec(request.source, options), request)
    assert result.resumed_from == kept and str(result.info.digest) == b.digest


def test_a_registry_blob_cut_at_an_odd_offset_keeps_every_byte_sent(
    blob_server: BlobServer, tmp_path: Path
) -> None:
    cut = MiB + MiB // 2 + 17
    b = Behaviour(data=os.urandom(3 * MiB), truncate_at=cut)
    request = _served_blob(blob_server, b)
    store = LocalStore(tmp_path / "store", fsync=False)
    with pytest.raises(errdefs.DataLoss):
        ingest_once(store, source_from_spec(request.source, FetchOptions()), request)
    assert (
        store.status(request.ref).offset
        == blob_server.bytes_served(f"/v2/app/blobs/{b.digest}")
        == cut
    )
