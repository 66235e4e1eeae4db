"""The ingest request: default refs, validation and its JSON form."""

from __future__ import annotations

import pytest

from ingestq import errdefs
from ingestq.ingest.request import IngestRequest, make_request
from ingestq.store.digest import Digest
from ingestq.store.rules import MAX_SIZE
from ingestq.store.values import Descriptor

DIGEST = "sha256:" + "ab" * 32


def test_make_request_defaults_the_ref_from_the_digest_or_the_source() -> None:
    by_digest = make_request({"type": "http", "url": "u"}, "u", digest=DIGEST, size=3)
    assert by_digest.ref == f"blob-{DIGEST}"
    assert by_digest.expected == Descriptor(Digest.parse(DIGEST), 3, "application/octet-stream")
    layer = make_request(
        {}, "u", digest=DIGEST, media_type="application/vnd.oci.image.layer.v1.tar"
    )
    assert layer.ref == f"layer-{DIGEST}"
    unknown = make_request({"type": "http", "url": "u"}, "http://h/x")
    assert unknown.digest is None and unknown.expected is None
    assert unknown.ref.startswith("source-")
    assert make_request({}, "u", ref="mine").ref == "mine"


def test_make_request_refuses_bad_digests_and_sizes() -> None:
    with pytest.raises(errdefs.InvalidArgument):
        make_request({}, "u", digest="sha256:nothex")
    with pytest.raises(errdefs.InvalidArgument, match="negative"):
        make_request({}, "u", size=-1)


@pytest.mark.parametrize("size", [MAX_SIZE + 1, 1 << 64])
def test_a_size_beyond_what_the_store_can_hold_is_invalid_argument_when_made(size: int) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="larger than the store can hold"):
        make_request({}, "u", size=size)
    with pytest.raises(errdefs.InvalidArgument, match="larger than the store can hold"):
        IngestRequest.from_json({"source": {}, "ref": "r", "size": size})
    with pytest.raises(errdefs.InvalidArgument, match="larger than the store can hold"):
        IngestRequest({}, "r", size=size)
    assert make_request({}, "u", size=MAX_SIZE).size == MAX_SIZE


def test_the_json_form_round_trips() -> None:
    req = make_request({"type": "file", "path": "/x"}, "/x", digest=DIGEST, size=9,
                       labels={"a": "b"})  # fmt: skip
    assert IngestRequest.from_json(req.to_json()) == req
    bare = IngestRequest({"type": "file"}, "ref")
    assert IngestRequest.from_json(bare.to_json()) == bare


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {"ref": "r"},
        {"source": {}, "ref": ""},
        {"source": {}, "ref": "r", "size": -1},
        {"source": {}, "ref": "r", "size": True},
        {"source": {}, "ref": "r", "size": 1.5},
        {"source": {}, "ref": "r", "labels": ["x"]},
        {"source": {}, "ref": "r", "digest": "md5:x"},
    ],
)
def test_malformed_json_is_invalid_argument(obj: object) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        IngestRequest.from_json(obj)  # type: ignore[arg-type]
