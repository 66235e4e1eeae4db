"""Every field of an ingest request is checked when the request is made, in the
producer (:func:`ingestq.jobs.ingest.ingest_request`), and again when a worker decodes
one (:meth:`IngestRequest.from_json`, a forged message), with the store's rules."""

from __future__ import annotations

from typing import Any

import pytest

from ingestq import errdefs
from ingestq.ingest.request import IngestRequest
from ingestq.jobs.ingest import ingest_request
from ingestq.store import Digest

URL = "http://127.0.0.1:1/blob"
GOOD = "sha256:" + "a" * 64

BAD_FIELDS: dict[str, dict[str, Any]] = {
    "digest with a trailing newline": {"digest": "sha256:" + "a" * 63 + "\n"},
    "digest of the wrong length": {"digest": "sha256:abc"},
    "ref with a trailing newline": {"ref": "layer-sha256:abc\n"},
    "empty ref": {"ref": ""},
    "10 KB label value": {"labels": {"team": "v" * 10_000}},
    "label key with a trailing newline": {"labels": {"team\n": "a"}},
    "label value not a string": {"labels": {"team": 1}},
    "negative size": {"size": -1},
    "size past int64": {"size": 1 << 63},
    "bool size": {"size": True},
    "media type with a trailing newline": {"media_type": "application/json\n"},
    "media type without a subtype": {"media_type": "blob"},
}


@pytest.mark.parametrize("fields", BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_a_bad_field_fails_when_the_request_is_made(fields: dict[str, Any]) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        ingest_request(URL, **fields)


def test_a_good_request_keeps_every_field() -> None:
    req = ingest_request(
        URL, digest=GOOD, size=3, media_type="application/vnd.oci.image.layer.v1.tar",
        ref="mine", labels={"team": "a", "note": "two\nlines"},
    )  # fmt: skip
    assert (req.ref, req.digest, req.size) == ("mine", Digest.parse(GOOD), 3)
    assert req.media_type == "application/vnd.oci.image.layer.v1.tar"
    assert IngestRequest.from_json(req.to_json()) == req


FORGED: dict[str, dict[str, Any]] = {
    "10 KB label value": {"labels": {"team": "v" * 10_000}},
    "label value an object": {"labels": {"team": {"x": 1}}},
    "labels a list": {"labels": [["team", "a"]]},
    "ref with a trailing newline": {"ref": "r\n"},
    "digest with a trailing newline": {"digest": "sha256:" + "a" * 63 + "\n"},
    "digest a number": {"digest": 5},
    "size a string": {"size": "3"},
    "size negative": {"size": -3},
    "media type a list": {"media_type": ["application/json"]},
    "media type with a trailing newline": {"media_type": "application/json\n"},
    "source a string": {"source": URL},
}


@pytest.mark.parametrize("fields", FORGED.values(), ids=FORGED.keys())
def test_a_forged_message_is_invalid_when_decoded(fields: dict[str, Any]) -> None:
    good = ingest_request(URL, digest=GOOD, size=3).to_json()
    with pytest.raises(errdefs.InvalidArgument):
        IngestRequest.from_json({**good, **fields})


def test_building_a_request_directly_checks_it_too() -> None:
    with pytest.raises(errdefs.InvalidArgument):
        IngestRequest({"type": "http", "url": URL}, "ref", labels={"k": "v" * 5000})
    with pytest.raises(errdefs.InvalidArgument):
        IngestRequest({"type": "http", "url": URL}, "ref", GOOD)  # type: ignore[arg-type]
