"""Typed errors cross the queue: every errdefs kind raised in a real worker arrives at
the producer as the same class and message; anything else arrives as Unknown; a
tampered result never makes the producer import, construct or raise anything else."""

from __future__ import annotations

import json

import pytest
from celery.result import AsyncResult

from ingestq import errdefs
from ingestq.jobs.api import JobState
from ingestq.tasks.app import make_app
from ingestq.tasks.client import enqueue_ingest
from tests.tasks.conftest import Cluster

KIND_NAMES = [name for name in errdefs.KINDS]


def test_every_kind_raised_in_a_worker_arrives_as_the_same_class_and_message(
    cluster: Cluster,
) -> None:
    cluster.env["INGESTQ_MAX_SOURCE_RETRIES"] = "0"
    cluster.start_worker(concurrency=2)
    jobs = {
        name: enqueue_ingest(
            {
                "type": "raise",
                "kind": name,
                "message": f"boom {name}",
                "details": {"ref": f"r-{name}"},
            },
            ref=f"ref-{name}",
            client=cluster.client,
        )
        for name in KIND_NAMES
    }
    backend_app = make_app(cluster.client.settings, main="reader")
    try:
        for name, job in jobs.items():
            with pytest.raises(errdefs.ErrdefsError) as caught:
                job.wait(timeout=30)
            expected = errdefs.KINDS[name](f"boom {name}", {"ref": f"r-{name}"})
            assert type(caught.value) is errdefs.KINDS[name], cluster.logs()
            assert str(caught.value) == str(expected)
            assert caught.value.details == {"ref": f"r-{name}"}
            canceled = name == "Canceled"
            assert job.state is (JobState.CANCELED if canceled else JobState.FAILED)
            # Celery's own exception fields stay our class too.
            native = AsyncResult(job.id, app=backend_app).get(propagate=False, timeout=5)
            assert type(native) is errdefs.KINDS[name]
            assert str(native) == str(expected)
    finally:
        backend_app.close()


def test_a_foreign_exception_arrives_as_unknown_with_its_message(cluster: Cluster) -> None:
    cluster.start_worker()
    job = enqueue_ingest(
        {"type": "raise", "kind": "ValueError", "message": "not a number"},
        ref="ref-value-error", client=cluster.client,
    )  # fmt: skip
    with pytest.raises(errdefs.Unknown) as caught:
        job.wait(timeout=30)
    assert str(caught.value) == "not a number: unknown"


@pytest.mark.parametrize(
    ("exc_module", "exc_type", "args"),
    [
        ("builtins", "SystemExit", [3]),
        ("builtins", "KeyboardInterrupt", []),
        ("os", "system", ["touch /tmp/ingestq-pwned"]),
        ("subprocess", "Popen", [["true"]]),
        ("errdefs", "NoSuchKind", ["x"]),
        ("celery.exceptions", "NotFound", ["looks like ours"]),
    ],
)
def test_a_tampered_result_never_constructs_anything_but_errdefs(
    cluster: Cluster, exc_module: str, exc_type: str, args: list[object]
) -> None:
    job_id = f"tampered-{exc_module}-{exc_type}"
    meta = {
        "status": "FAILURE",
        "result": {"exc_type": exc_type, "exc_module": exc_module, "exc_message": args},
        "traceback": None,
        "children": [],
        "date_done": None,
        "task_id": job_id,
    }
    cluster.client.result_client.set(f"celery-task-meta-{job_id}", json.dumps(meta))
    job = cluster.client.job(job_id)
    with pytest.raises(errdefs.Unknown) as caught:
        job.wait(timeout=5)
    assert exc_type in str(caught.value)


def test_a_tampered_error_record_decodes_only_to_registered_kinds(cluster: Cluster) -> None:
    job_id = "tampered-record"
    cluster.client.result_client.set(
        f"celery-task-meta-{job_id}",
        json.dumps({"status": "FAILURE", "result": {"exc_type": "NotFound",
                    "exc_module": "errdefs", "exc_message": ["x", None]}}),
    )  # fmt: skip
    cluster.client.client.hset(
        f"ingestq:job:{job_id}",
        "error",
        json.dumps({"kind": "SystemExit", "code": 99, "message": "bye", "details": {}}),
    )
    with pytest.raises(errdefs.Unknown) as caught:
        cluster.client.job(job_id).wait(timeout=5)
    assert str(caught.value) == "bye: unknown"
