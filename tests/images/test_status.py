"""The pull's result and per-blob status values and their JSON forms."""

from __future__ import annotations

import pytest

from ingestq import errdefs
from ingestq.images.status import BlobState, BlobStatus, ChildResult, PullResult
from ingestq.store.digest import Digest
from ingestq.store.values import Descriptor, Info, utcnow

D1, D2 = Digest.from_bytes(b"one"), Digest.from_bytes(b"two")


def test_a_pull_result_round_trips_and_sums_the_fetched_bytes() -> None:
    now = utcnow()
    target = Descriptor(D1, 3, "application/vnd.oci.image.manifest.v1+json")
    children = (
        ChildResult(f"layer-{D2}", D2, 3, True, 2, 1),
        ChildResult(f"config-{D1}", D1, 3, False),
    )
    result = PullResult("app:v1", target, Info(D1, 3, now, now, {"a": "b"}), children)
    out = result.to_json()
    assert out["digest"] == str(D1) and out["kind"] == "pull"
    assert out["recorded"] == target.to_oci() and out["bytes_fetched"] == 2
    back = PullResult.from_json(out)
    assert back.children == children and back.name == "app:v1"
    assert back.recorded == target and back.info.labels == {"a": "b"}


def test_malformed_results_are_invalid_argument() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="malformed child result"):
        ChildResult.from_json({"ref": "x", "digest": str(D1), "size": "many"})
    with pytest.raises(errdefs.InvalidArgument, match="malformed pull result"):
        PullResult.from_json({"name": "x"})


def test_a_blob_status_counts_its_size_once_done_else_its_offset() -> None:
    downloading = BlobStatus(f"layer-{D1}", D1, "t", 10, BlobState.DOWNLOADING, 4)
    done = BlobStatus(f"config-{D2}", D2, "t", 10, BlobState.DONE)
    assert (downloading.kind, downloading.done_bytes) == ("layer", 4)
    assert (done.kind, done.done_bytes) == ("config", 10)
    assert done.to_json() == {
        "ref": f"config-{D2}", "digest": str(D2), "media_type": "t", "size": 10,
        "state": "done", "offset": 0, "reason": None,
    }  # fmt: skip
