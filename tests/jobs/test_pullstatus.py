"""Pull job values: a pull's status totals and JSON, and the ids of its child jobs."""

from __future__ import annotations

from ingestq.images.plan import PlannedBlob, PullPlan
from ingestq.images.status import BlobState, BlobStatus
from ingestq.jobs.api import JobState, job_id_for
from ingestq.jobs.pullstatus import PullStatus, with_child_job_ids
from ingestq.store.digest import Digest
from ingestq.store.values import Descriptor

D1, D2, D3 = (Digest.from_bytes(x) for x in (b"1", b"2", b"3"))


def test_bytes_done_counts_done_blobs_whole_and_others_by_offset() -> None:
    blobs = (
        BlobStatus(f"manifest-{D1}", D1, "m", 100, BlobState.DONE),
        BlobStatus(f"layer-{D2}", D2, "l", 1000, BlobState.DOWNLOADING, 250),
        BlobStatus(f"layer-{D3}", D3, "l", 500, BlobState.WAITING),
    )
    status = PullStatus("job", JobState.STARTED, "r/app:v1", "r/app:v1", None, None, blobs)
    assert (status.bytes_done, status.bytes_total) == (350, 1600)
    out = status.to_json()
    assert out["state"] == "started" and out["target"] is None
    assert (out["bytes_done"], out["bytes_total"]) == (350, 1600)
    assert [b["state"] for b in out["blobs"]] == ["done", "downloading", "waiting"]
    empty = PullStatus("job", JobState.QUEUED, "r/app:v1")
    assert (empty.bytes_done, empty.bytes_total) == (0, 0)


def test_child_job_ids_derive_from_the_pull_id_and_the_digest() -> None:
    target = Descriptor(D1, 1, "application/vnd.oci.image.manifest.v1+json")
    plan = PullPlan(
        "app", target, (PlannedBlob(target, f"manifest-{D1}", {}),),
        (PlannedBlob(Descriptor(D2, 1), f"layer-{D2}", {}),
         PlannedBlob(Descriptor(D3, 1), f"layer-{D3}", {})),
        {},
    )  # fmt: skip
    named = with_child_job_ids(plan, "pull-1")
    assert [c.job_id for c in named.children] == [
        job_id_for(f"pull:pull-1:{D2}"),
        job_id_for(f"pull:pull-1:{D3}"),
    ]
    assert named.manifests == plan.manifests and named.manifests[0].job_id == ""
    assert with_child_job_ids(plan, "pull-1") == named  # a redelivered pull: the same ids
    assert with_child_job_ids(plan, "pull-2").children[0].job_id != named.children[0].job_id
