"""gc against live jobs on the embedded backend and a real registry: a pull's lease
covers it from its first byte to the image record, job records past their retention
go, and gc run in a loop by another process while pulls and ingests run here and in
other processes never costs a job or an image a blob (skopeo copies every image)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ingestq.jobs.config import Settings
from ingestq.jobs.gc import run_gc
from ingestq.jobs.local import LocalClient
from ingestq.store.digest import Digest
from ingestq.store.gc import JOB_LEASE_NAMESPACE, REQUESTED_LABEL, check_image, collect
from ingestq.store.images import ImageIndex
from ingestq.store.leases import LeaseStore
from ingestq.tasks.client import enqueue_ingest, enqueue_pull
from tests.servers import oci
from tests.servers.registry import Registry
from tests.servers.skopeo import skopeo
from tests.tasks.blobserver import Behaviour, BlobServer

INGESTQ = str(Path(sys.executable).with_name("ingestq"))


@pytest.fixture
def local(tmp_path: Path) -> LocalClient:
    return LocalClient(Settings(root=tmp_path / "store", fsync=False))


def test_a_running_pull_holds_a_lease_on_its_blobs_until_the_image_is_recorded(
    registry: Registry, local: LocalClient
) -> None:
    layers = [os.urandom(50_000), os.urandom(60_000)]
    image = oci.build_image(layers)
    oci.push_built_image(registry, "leased", image, "v1")
    leases = LeaseStore(local.store.root)
    seen: list[set[str]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for lease in leases.list(JOB_LEASE_NAMESPACE):
                seen.append({rid for _, rid in lease.resources})

    t = threading.Thread(target=watch)
    t.start()
    try:
        enqueue_pull(f"{registry.host}/leased:v1", client=local).wait(timeout=60)
    finally:
        stop.set()
        t.join()
    wanted = {image.digest, image.config_descriptor.digest} | {
        d.digest for d in image.layer_descriptors
    }
    assert any(wanted <= resources for resources in seen), "the lease never held the image"
    assert leases.list(JOB_LEASE_NAMESPACE) == []  # dropped once recorded
    assert collect(local.store).blobs == ()
    assert check_image(local.store, f"{registry.host}/leased:v1").complete


def test_an_ingest_is_kept_and_one_with_expire_goes_after_its_time(
    local: LocalClient, tmp_path: Path
) -> None:
    kept, expiring = tmp_path / "kept", tmp_path / "expiring"
    kept.write_bytes(b"keep me")
    expiring.write_bytes(b"let me go")
    a = enqueue_ingest(str(kept), client=local).wait(timeout=30)
    b = enqueue_ingest(str(expiring), client=local, expire="0s").wait(timeout=30)
    assert a.labels[REQUESTED_LABEL] == "never"
    assert [d for d, _ in collect(local.store).blobs] == [str(b.digest)]
    assert local.store.exists(a.digest)


def test_finished_job_records_past_their_retention_go(local: LocalClient, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"record me")
    job = enqueue_ingest(str(f), client=local)
    job.wait(timeout=30)
    jobs_dir = local.store.layout.jobs
    assert any(p.name.startswith(job.id) for p in jobs_dir.iterdir())
    settings = Settings(root=local.store.root, fsync=False)
    assert run_gc(local.store, settings).job_records == 0  # within the retention
    short = dataclasses.replace(settings, gc_job_retention=-1.0)
    assert run_gc(local.store, short, dry_run=True).job_records == 1
    assert run_gc(local.store, short).job_records == 1
    assert not any(p.name.startswith(job.id) for p in jobs_dir.iterdir())


_GC_LOOP = """
import sys
from pathlib import Path
from ingestq.store.gc import collect
from ingestq.store.local import LocalStore
store = LocalStore(sys.argv[1], fsync=False)
stop = Path(sys.argv[2])
runs = 0
while not stop.exists():
    collect(store)
    runs += 1
print(runs)
"""


@pytest.mark.slow
def test_gc_in_a_loop_never_costs_a_running_pull_or_ingest_a_blob(
    registry: Registry, blob_server: BlobServer, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    local = LocalClient(Settings(root=root, fsync=False))
    names = []
    for i in range(6):
        layers = [os.urandom(200_000 + i), b"shared layer", os.urandom(1000)]
        oci.push_built_image(registry, f"race{i}", oci.build_image(layers), "v1")
        names.append(f"{registry.host}/race{i}:v1")
    # the same bytes served to several ingests, some slowly
    payloads = [os.urandom(300_000 + i) for i in range(4)]
    for i, data in enumerate(payloads):
        slow = (16_384, 0.005) if i % 2 else None
        blob_server.add(f"/p{i}", Behaviour(data=data, chunk=16_384, trickle=slow))
    stop = tmp_path / "stop"
    gc = subprocess.Popen(
        [sys.executable, "-c", _GC_LOOP, str(root), str(stop)], stdout=subprocess.PIPE, text=True
    )
    env = {**os.environ, "INGESTQ_ROOT": str(root), "INGESTQ_FSYNC": "0"}
    env.pop("INGESTQ_REDIS_URL", None)
    try:
        # two pulls and two ingests in other processes (embedded CLI), the rest here
        procs = [
            subprocess.Popen([INGESTQ, "pull", name], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for name in names[:2]
        ] + [
            subprocess.Popen([INGESTQ, "ingest", blob_server.url + f"/p{i}"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for i in range(2)
        ]  # fmt: skip
        pulls = [enqueue_pull(name, client=local) for name in names[2:]]
        ingests = [enqueue_ingest(blob_server.url + f"/p{i}", client=local) for i in range(2, 4)]
        for job in pulls:
            job.wait(timeout=120)
        for ingest in ingests:
            ingest.wait(timeout=120)
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
    finally:
        stop.touch()
        out, _ = gc.communicate(timeout=60)
    assert gc.returncode == 0
    assert int(out.strip()) >= 2, "gc did not run during the jobs"
    store = local.store
    collect(store)  # and once more, with nothing running
    assert sorted(n for n, _ in ImageIndex(root).list()) == sorted(names)
    for i, name in enumerate(names):
        assert check_image(store, name).complete, name
        skopeo("copy", "-q", f"oci:{root}:{name}", f"dir:{tmp_path / f'copy{i}'}")
    for data in payloads:
        assert store.exists(Digest.from_bytes(data))
