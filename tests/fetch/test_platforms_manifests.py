"""Platform parsing, matching and manifest selection; manifest parsing, refs, GC labels
and the Docker → OCI view (all pure, no I/O)."""

from __future__ import annotations

import json

import pytest

from ingestq import errdefs
from ingestq.fetch import manifests, platforms
from ingestq.fetch.platforms import Matcher, Platform
from ingestq.store.digest import Digest
from ingestq.store.values import Descriptor
from tests.servers import oci


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("Linux/AMD64", "linux/amd64"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/6", "linux/arm/v6"),
        ("linux/i386", "linux/386"),
        ("windows/amd64", "windows/amd64"),
    ],
)
def test_platform_specifiers_are_parsed_and_normalised(text: str, expected: str) -> None:
    assert str(platforms.parse(text)) == expected


def test_single_word_specifiers_fill_in_the_host() -> None:
    here = platforms.host()
    assert platforms.parse("linux") == Platform("linux", here.architecture, here.variant)
    assert platforms.parse("arm64") == Platform(here.os, "arm64")


@pytest.mark.parametrize("text", ["", "a/b/c/d", "linux/", "linux/am d64"])
def test_malformed_specifiers_are_invalid_argument(text: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        platforms.parse(text)


def test_matcher_ranks_exact_variants_first_and_accepts_older_arm() -> None:
    v7 = Matcher(Platform("linux", "arm", "v7"))
    assert v7.rank(Platform("linux", "arm", "v7")) == 0
    assert v7.rank(Platform("linux", "arm", "v6")) == 1
    assert v7.rank(Platform("linux", "arm", "v5")) == 2
    assert v7.rank(Platform("linux", "arm", "v8")) is None
    assert not v7.match(Platform("linux", "arm64"))
    arm64 = Matcher(Platform("linux", "arm64"))
    assert arm64.match(Platform("linux", "arm64", "v8"))
    assert not Matcher(Platform("linux", "amd64")).match(Platform("windows", "amd64"))


def _entries() -> list[dict[str, object]]:
    def entry(n: int, plat: dict[str, str] | None) -> dict[str, object]:
        e: dict[str, object] = {
            "mediaType": manifests.OCI_MANIFEST,
            "digest": "sha256:" + f"{n:02x}" * 32,
            "size": 100 + n,
        }
        if plat is not None:
            e["platform"] = plat
        return e

    return [
        entry(1, {"os": "linux", "architecture": "amd64"}),
        entry(2, {"os": "linux", "architecture": "arm", "variant": "v6"}),
        entry(3, {"os": "linux", "architecture": "arm", "variant": "v7"}),
        entry(4, {"os": "unknown", "architecture": "unknown"}),
        entry(5, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
    ]


def test_select_manifests_picks_the_best_match_per_platform_in_index_order() -> None:
    entries = _entries()
    chosen = platforms.select_manifests(
        entries, [platforms.parse("linux/arm64"), platforms.parse("linux/arm/v7")]
    )
    assert [d.size for d, _ in chosen] == [103, 105]
    assert [str(p) for _, p in chosen] == ["linux/arm/v7", "linux/arm64"]
    older = platforms.select_manifests(entries[:2], [platforms.parse("linux/arm/v7")])
    assert [d.size for d, _ in older] == [102]


def test_select_manifests_defaults_to_the_host_and_all_takes_everything() -> None:
    entries = _entries()
    if platforms.host() == Platform("linux", "amd64"):
        assert [d.size for d, _ in platforms.select_manifests(entries)] == [101]
    everything = platforms.select_manifests(entries, all_platforms=True)
    assert [d.size for d, _ in everything] == [101, 102, 103, 104, 105]


def test_no_match_is_not_found_naming_what_is_available() -> None:
    with pytest.raises(errdefs.NotFound, match=r"linux/s390x.*linux/amd64"):
        platforms.select_manifests(_entries(), [platforms.parse("linux/s390x")])
    # attestation manifests (unknown/unknown) never match
    with pytest.raises(errdefs.NotFound):
        platforms.select_manifests(_entries()[3:4], [platforms.parse("linux/amd64")])


def test_entries_without_platform_match_but_rank_last() -> None:
    entries = _entries()
    bare = dict(entries[0])
    del bare["platform"]
    bare["size"] = 999
    chosen = platforms.select_manifests([bare, *entries], [platforms.parse("linux/amd64")])
    assert [d.size for d, _ in chosen] == [101]
    only_bare = platforms.select_manifests([bare], [platforms.parse("linux/amd64")])
    assert [d.size for d, _ in only_bare] == [999]


def _desc(data: bytes, media_type: str) -> Descriptor:
    return Descriptor(Digest.from_bytes(data), len(data), media_type)


def test_manifest_parsing_children_refs_and_gc_labels() -> None:
    image = oci.build_image([b"one", b"two"])
    desc = _desc(image.manifest, manifests.OCI_MANIFEST)
    doc = manifests.parse(desc, image.manifest)
    assert isinstance(doc, manifests.Manifest)
    assert [str(c.digest) for c in doc.children] == [
        image.config_descriptor.digest,
        *(d.digest for d in image.layer_descriptors),
    ]
    assert doc.gc_labels() == {
        "containerd.io/gc.ref.content.config": image.config_descriptor.digest,
        "containerd.io/gc.ref.content.l.0": image.layer_descriptors[0].digest,
        "containerd.io/gc.ref.content.l.1": image.layer_descriptors[1].digest,
    }
    assert manifests.ref_key(desc) == f"manifest-{desc.digest}"
    assert manifests.ref_key(doc.layers[0]) == f"layer-{doc.layers[0].digest}"
    assert manifests.ref_key(doc.config) == f"config-{doc.config.digest}"
    index = oci.build_index([image])
    idesc = _desc(index.manifest, manifests.OCI_INDEX)
    assert manifests.ref_key(idesc) == f"index-{idesc.digest}"
    parsed = manifests.parse(idesc, index.manifest)
    assert isinstance(parsed, manifests.Index)
    assert manifests.index_gc_labels([desc]) == {
        "containerd.io/gc.ref.content.m.0": str(desc.digest)
    }


def test_manifest_errors_keep_their_kinds() -> None:
    image = oci.build_image([b"x"])
    wrong_type = _desc(image.manifest, manifests.DOCKER_MANIFEST)
    with pytest.raises(errdefs.InvalidArgument, match="disagrees"):
        manifests.parse(wrong_type, image.manifest)
    with pytest.raises(errdefs.InvalidArgument, match="not JSON"):
        manifests.parse(_desc(b"{", manifests.OCI_MANIFEST), b"{")
    schema1 = _desc(b"{}", "application/vnd.docker.distribution.manifest.v1+prettyjws")
    with pytest.raises(errdefs.Unimplemented, match="not supported"):
        manifests.parse(schema1, b"{}")
    with pytest.raises(errdefs.Unimplemented):
        manifests.parse(_desc(b"{}", "application/octet-stream"), b"{}")


def test_distribution_source_values_are_sorted_and_deduplicated() -> None:
    assert manifests.append_distribution_source(None, "b") == "b"
    assert manifests.append_distribution_source("b", "a") == "a,b"
    assert manifests.append_distribution_source("a,b", "b") == "a,b"
    assert manifests.distribution_source_key("127.0.0.1:5000") == (
        "containerd.io/distribution.source.127.0.0.1:5000"
    )


def test_docker_manifests_convert_to_an_oci_view_with_the_same_blobs() -> None:
    image = oci.build_image([b"layer"], flavor="docker")
    desc = _desc(image.manifest, manifests.DOCKER_MANIFEST)
    view = manifests.oci_manifest(desc, image.manifest)
    assert view == manifests.oci_manifest(desc, image.manifest)  # deterministic
    doc = json.loads(view)
    assert doc["mediaType"] == manifests.OCI_MANIFEST
    assert doc["config"]["mediaType"] == manifests.OCI_CONFIG
    assert doc["config"]["digest"] == image.config_descriptor.digest
    assert doc["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert doc["layers"][0]["digest"] == image.layer_descriptors[0].digest
    index = json.loads(
        manifests.oci_index(
            [{**image.descriptor.to_json(), "mediaType": manifests.DOCKER_MANIFEST}]
        )
    )
    assert index["mediaType"] == manifests.OCI_INDEX
    assert index["manifests"][0]["mediaType"] == manifests.OCI_MANIFEST
    assert index["manifests"][0]["platform"] == {"os": "linux", "architecture": "amd64"}


EMPTY_SHA256 = "sha256:" + "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        ({"mediaType": oci.OCI_LAYER, "digest": "sha256:" + "ab" * 32}, "has no size"),
        ({"mediaType": oci.OCI_LAYER, "digest": "sha256:" + "ab" * 32, "size": 0},
         "0 bytes cannot hash to"),
    ],
)  # fmt: skip
def test_a_descriptor_must_state_its_size(layer: dict[str, object], match: str) -> None:
    """Without a size a layer's download would have no bound but the registry's will;
    0 bytes can only be the empty blob."""
    image = oci.build_image([b"x"])
    doc = json.loads(image.manifest)
    doc["layers"] = [layer]
    body = json.dumps(doc).encode()
    desc = Descriptor(Digest.from_bytes(body), len(body), oci.OCI_MANIFEST)
    with pytest.raises(errdefs.InvalidArgument, match=match):
        manifests.parse(desc, body)
    doc["layers"] = [{"mediaType": oci.OCI_LAYER, "digest": EMPTY_SHA256, "size": 0}]
    body = json.dumps(doc).encode()
    desc = Descriptor(Digest.from_bytes(body), len(body), oci.OCI_MANIFEST)
    (empty,) = manifests.parse(desc, body).children[1:]
    assert empty.size == 0
