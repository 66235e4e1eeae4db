"""A request with a bad field fails with InvalidArgument where it is made, before
anything is published or fetched: in the producer API at enqueue, and on the worker when
a forged message carries it. The blob server counts requests: none reaches it."""

from __future__ import annotations

import os
from typing import Any

import pytest

from ingestq import errdefs
from ingestq.jobs.ingest import ingest_request
from ingestq.tasks import keys
from ingestq.tasks.app import QUEUE
from ingestq.tasks.client import enqueue_ingest, get_job
from ingestq.tasks.names import TASK_INGEST
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.conftest import Cluster

BAD: dict[str, dict[str, Any]] = {
    "10 KB label value": {"labels": {"team": "v" * 10_000}},
    "label key with a trailing newline": {"labels": {"team\n": "a"}},
    "digest with a trailing newline": {"digest": "sha256:" + "a" * 63 + "\n"},
    "ref with a trailing newline": {"ref": "layer-sha256:abc\n"},
    "media type with a trailing newline": {"media_type": "application/json\n"},
    "negative size": {"size": -1},
}


def _nothing_recorded_or_queued(cluster: Cluster) -> None:
    redis = cluster.client.client
    assert redis.llen(QUEUE) == 0
    assert list(redis.scan_iter(keys.job_key("*"))) == []


@pytest.mark.parametrize("fields", BAD.values(), ids=BAD.keys())
def test_a_bad_field_fails_at_enqueue_and_nothing_is_queued(
    cluster: Cluster, blob_server: BlobServer, fields: dict[str, Any]
) -> None:
    url = blob_server.add("/blob", Behaviour(data=b"x" * 1024))
    with pytest.raises(errdefs.InvalidArgument):
        enqueue_ingest(url, job_id="bad", client=cluster.client, **fields)
    _nothing_recorded_or_queued(cluster)
    assert get_job("bad", client=cluster.client).state.value == "unknown"
    assert blob_server.requests_for("/blob") == []


@pytest.mark.slow
def test_a_worker_fetches_nothing_for_a_bad_request(
    cluster: Cluster, blob_server: BlobServer
) -> None:
    """With a live worker: the 10 KB label is refused at enqueue, and a forged message
    carrying it (sent around the producer API) fails InvalidArgument on receipt. The
    blob is never requested and no ingest is left; a good job on the same worker is
    fetched, which shows the worker was draining the queue."""
    data = os.urandom(4 << 20)
    big = Behaviour(data=data)
    url = blob_server.add("/big", big)
    cluster.start_worker()
    label = {"team": "v" * 10_000}
    with pytest.raises(errdefs.InvalidArgument, match="greater than maximum size"):
        enqueue_ingest(url, digest=big.digest, size=len(data), labels=label,
                       client=cluster.client)  # fmt: skip
    _nothing_recorded_or_queued(cluster)

    forged = ingest_request(url, digest=big.digest, size=len(data)).to_json()
    forged["labels"] = label
    cluster.client.records.create("forged", {"kind": "ingest", "ref": forged["ref"]})
    cluster.client.app.send_task(TASK_INGEST, args=[forged], task_id="forged", queue=QUEUE)
    with pytest.raises(errdefs.InvalidArgument, match="greater than maximum size"):
        get_job("forged", client=cluster.client).wait(timeout=60)

    small = Behaviour(data=b"fine")
    good = enqueue_ingest(blob_server.add("/good", small), digest=small.digest,
                          client=cluster.client)  # fmt: skip
    assert str(good.wait(timeout=60).digest) == small.digest
    assert blob_server.requests_for("/big") == []
    assert [r.status for r in blob_server.requests_for("/good")] == [200]
    assert os.listdir(cluster.root / "ingest") == []
