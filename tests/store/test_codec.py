"""The JSON codecs of the store's values (store.codec): Info, Status, Holder and blob
metadata; decoding is total (InvalidArgument or None, never a traceback)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from ingestq import errdefs
from ingestq.store import Digest, Holder, Info, Status
from ingestq.store.codec import (
    BlobMeta,
    holder_from_dict,
    holder_from_json,
    holder_to_dict,
    holder_to_json,
    info_from_json,
    info_to_json,
    meta_from_json,
    meta_to_json,
    status_to_json,
)
from ingestq.store.values import utcnow

T0 = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
D = Digest.from_bytes(b"codec")


def test_info_round_trips_through_json() -> None:
    info = Info(D, 5, T0, T0 + timedelta(seconds=1), {"a": "1", "containerd.io/gc.root": "x"})
    obj = info_to_json(info)
    assert obj == {
        "digest": str(D),
        "size": 5,
        "created_at": T0.isoformat(),
        "updated_at": (T0 + timedelta(seconds=1)).isoformat(),
        "labels": {"a": "1", "containerd.io/gc.root": "x"},
    }
    assert info_from_json(json.loads(json.dumps(obj))) == info


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"digest": str(D), "size": "x", "created_at": T0.isoformat(), "updated_at": ""},
        {"digest": str(D), "size": 1, "created_at": 5, "updated_at": T0.isoformat()},
        {"digest": str(D), "size": 1, "created_at": "", "updated_at": "", "labels": []},
    ],
)
def test_malformed_info_is_invalid_argument(obj: dict[str, object]) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="malformed Info"):
        info_from_json(obj)


def test_blob_meta_round_trips_and_refuses_garbage() -> None:
    meta = BlobMeta(T0, T0, {"k": "v"})
    assert meta_from_json(meta_to_json(meta)) == meta
    with pytest.raises(errdefs.InvalidArgument, match="malformed blob metadata"):
        meta_from_json({"created_at": "then"})


def test_status_json_names_the_holder_or_null() -> None:
    h = Holder("me/1/abc", "host", 1, T0, T0, fence=3)
    st = Status("ref", 10, 20, T0, T0, D, h)
    assert status_to_json(st) == {
        "ref": "ref",
        "offset": 10,
        "total": 20,
        "started_at": T0.isoformat(),
        "updated_at": T0.isoformat(),
        "expected": str(D),
        "holder": holder_to_dict(h),
    }
    bare = status_to_json(Status("ref", 0, 0, T0, T0))
    assert (bare["expected"], bare["holder"]) == (None, None)


def test_holder_round_trips_and_garbage_reads_as_none() -> None:
    now = utcnow()
    h = Holder("id", "host", 12, now, now, fence=7)
    assert holder_from_json(holder_to_json(h)) == h
    assert holder_from_dict(holder_to_dict(h)) == h
    for bad in ("", "{", "[]", json.dumps({"id": "x"}), "null"):
        assert holder_from_json(bad) is None
    legacy = {k: v for k, v in holder_to_dict(h).items() if k != "fence"}
    assert holder_from_dict(legacy) == Holder("id", "host", 12, now, now, fence=0)
