"""``ingestq pull`` and ``ingestq images``: embedded (in this process through click's
runner, and two real processes sharing one store), through workers (real processes,
wait and --detach), single blobs, exit codes per error kind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from ingestq.jobs.api import JobState
from ingestq.store.digest import Digest
from ingestq.store.images import ImageIndex
from ingestq.worker.cli import cli
from tests.servers import oci
from tests.servers.registry import Registry
from tests.servers.util import wait_until
from tests.tasks.conftest import Cluster
from tests.tasks.registry_helpers import FrontFactory, MiB, push_multiplatform, shutdown_all
from tests.tasks.registry_helpers import fronts_fixture as fronts_fixture
from tests.tasks.workers import REPO


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTQ_")}
    env.update(INGESTQ_FSYNC="0", PYTHONPATH=str(REPO), **extra)
    return env


def _cli(*args: str) -> Result:
    """``ingestq ARGS`` in this process (click's runner; stdout and stderr apart), for
    the embedded default (no Redis in the environment)."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("INGESTQ_")}
    return CliRunner().invoke(cli, list(args), env={**unset, "INGESTQ_FSYNC": "0"})


def _ingestq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from ingestq.worker.cli import main; main()", *args],
        capture_output=True, text=True, env=env or _env(), cwd=REPO, timeout=120,
    )  # fmt: skip


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from ingestq.worker.cli import main; main()", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO,
    )  # fmt: skip


def test_embedded_pull_prints_progress_and_images_lists_it(
    registry: Registry, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    index = push_multiplatform(registry, "multi", "v1")
    image = oci.build_image([os.urandom(300_000)], flavor="docker")
    oci.push_built_image(registry, "dock", image, "v2")
    name = f"{registry.host}/multi:v1"
    done = _cli("pull", name, "--platform", "linux/arm64", "--root", str(root))
    assert done.exit_code == 0, done.stderr
    assert done.stdout.split() == [name, index.digest]
    arm = index.images[1]
    for ref in (f"index-{index.digest}", f"manifest-{arm.digest}",
                f"layer-{arm.layer_descriptors[0].digest}"):  # fmt: skip
        line = next(x for x in done.stderr.splitlines() if x.startswith(ref))
        assert " done " in line and "|" + "+" * 40 + "|" in line
    assert "elapsed:" in done.stderr and "total:" in done.stderr

    dock = _cli("pull", f"{registry.host}/dock:v2", "--json", "--root", str(root))
    assert dock.exit_code == 0, dock.stderr
    result = json.loads(dock.stdout)
    assert result["name"] == f"{registry.host}/dock:v2"
    assert result["target"]["digest"] == image.digest
    assert result["recorded"]["mediaType"] == oci.OCI_MANIFEST
    assert result["bytes_fetched"] == 300_000 + len(image.config)

    listed = _cli("images", "--root", str(root))
    assert listed.exit_code == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["NAME", "TYPE", "DIGEST", "SIZE", "PLATFORMS"]
    assert rows[1][:3] == [name, "oci-index", index.digest]
    assert rows[1][-1] == "linux/arm64"
    assert rows[2][:3] == [f"{registry.host}/dock:v2", "docker-manifest", image.digest]
    as_json = json.loads(_cli("images", "--json", "--root", str(root)).stdout)
    # The size counts what index.json reaches: the OCI view, the config and the layer.
    view_size = len(_view(root, as_json[1]))
    assert as_json[1]["size"] == view_size + image.config_descriptor.size + 300_000
    assert as_json[1]["recorded"] != as_json[1]["digest"] == image.digest
    quiet = _cli("images", "-q", "--root", str(root)).stdout.split()
    assert quiet == [name, f"{registry.host}/dock:v2"]


def _view(root: Path, row: dict[str, str]) -> bytes:
    return (root / "blobs" / "sha256" / row["recorded"][7:]).read_bytes()


def test_errors_exit_with_their_kind_and_detach_needs_a_queue(
    registry: Registry, tmp_path: Path
) -> None:
    root = str(tmp_path / "store")
    missing = _cli("pull", f"{registry.host}/app:nope", "--root", root)
    assert missing.exit_code == 15  # NotFound
    assert missing.stderr.strip().splitlines()[-1].startswith("ingestq: NotFound: resolve ")
    bad = _cli("pull", "Bad/Ref", "--root", root)
    assert bad.exit_code == 13  # InvalidArgument
    detach = _cli("pull", f"{registry.host}/app:v1", "--detach", "--root", root)
    assert detach.exit_code == 13 and "--detach needs a queue" in detach.stderr


def test_a_single_registry_blob(registry: Registry, tmp_path: Path) -> None:
    data = os.urandom(70_000)
    digest = oci.push_blob(registry, "blobs", data)
    out = _cli("pull", "--blob", f"{registry.host}/blobs@{digest}", "--root",
                   str(tmp_path / "store"))  # fmt: skip
    assert out.exit_code == 0, out.stderr
    assert out.stdout.strip() == digest
    assert (tmp_path / "store" / "blobs" / "sha256" / digest[7:]).read_bytes() == data
    unknown = str(Digest.from_bytes(b"nope"))
    gone = _cli("pull", "--blob", f"{registry.host}/blobs@{unknown}", "--root",
                    str(tmp_path / "store"))  # fmt: skip
    assert gone.exit_code == 15, gone.stderr


def test_two_embedded_processes_share_the_store_and_fetch_shared_layers_once(
    registry: Registry, fronts: FrontFactory, tmp_path: Path
) -> None:
    front = fronts(registry.url)
    shared = os.urandom(2 * MiB)
    one = oci.build_image([shared, os.urandom(100)])
    two = oci.build_image([shared, os.urandom(200)])
    oci.push_built_image(registry, "one", one, "v1")
    oci.push_built_image(registry, "two", two, "v1")
    digest = one.layer_descriptors[0].digest
    gate = front.rule(rf"^GET /v2/\w+/blobs/{digest}", gate_offset=MiB)
    root = str(tmp_path / "store")
    first = _start("pull", f"{front.host}/one:v1", "--root", root)
    assert gate.gate_reached.wait(30)
    second = _start("pull", f"{front.host}/two:v1", "--root", root)
    # The second process gets as far as the shared layer (its own small layer is in).
    wait_until(
        lambda: (Path(root) / "blobs" / "sha256" / two.layer_descriptors[1].digest[7:]).exists(),
        60,
        "the second pull fetched its own layer",
    )
    gate.gate.set()
    for proc in (first, second):
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    served = [r for r in front.requests("GET", digest) if r.status in (200, 206)]
    assert len(served) == 1, served
    names = dict(ImageIndex(root).list())
    assert {f"{front.host}/one:v1", f"{front.host}/two:v1"} <= set(names)


def test_through_workers_wait_and_detach(cluster: Cluster, registry: Registry) -> None:
    image = oci.build_image([os.urandom(100_000)])
    oci.push_built_image(registry, "app", image, "v1")
    cluster.start_worker()
    env = dict(cluster.env)
    name = f"{registry.host}/app:v1"
    waited = _ingestq("pull", name, "--json", env=env)
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["target"]["digest"] == image.digest
    detached = _ingestq("pull", name, "--name", "again", "--detach", env=env)
    assert detached.returncode == 0, detached.stderr
    job_id = detached.stdout.strip()
    job = cluster.client.job(job_id)
    assert job.wait(timeout=60).digest == Digest.parse(image.digest)
    assert job.state is JobState.SUCCEEDED
    status = _ingestq("job", "wait", job_id, env=env)
    assert status.returncode == 0 and status.stdout.strip() == image.digest
    assert ImageIndex(cluster.root).get("again").digest == Digest.parse(image.digest)
    shutdown_all(cluster.workers)


def test_the_progress_table_reads_like_ctr() -> None:
    from ingestq.images.status import BlobState, BlobStatus
    from ingestq.jobs.pullstatus import PullStatus
    from ingestq.store.values import Descriptor
    from ingestq.worker.cli.pull import render

    layer = Digest.from_bytes(b"layer")
    status = PullStatus(
        "job", JobState.STARTED, "r/app:v1", "r/app:v1", None,
        Descriptor(Digest.from_bytes(b"m"), 10, oci.OCI_MANIFEST),
        (
            BlobStatus(f"manifest-{Digest.from_bytes(b'm')}", Digest.from_bytes(b"m"),
                       oci.OCI_MANIFEST, 1024, BlobState.DONE, 1024),
            BlobStatus(f"layer-{layer}", layer, oci.OCI_LAYER, 4 * MiB,
                       BlobState.DOWNLOADING, MiB),
        ),
    )  # fmt: skip
    lines = render(status, 2.0)
    assert lines[0].startswith(f"manifest-{Digest.from_bytes(b'm')}:  done ")
    assert "|" + "+" * 40 + "|  1.0 KiB/1.0 KiB" in lines[0]
    assert lines[1].startswith(f"layer-{layer}:")
    assert "downloading  |" + "+" * 10 + "-" * 30 + "|  1.0 MiB/4.0 MiB" in lines[1]
    assert lines[2].startswith("elapsed: 2.0 s")
    assert lines[2].endswith("total: 1.0 MiB/4.0 MiB (512.5 KiB/s, ETA 6s)")
    assert "total: 1.0 MiB" in lines[2]
    planning = render(PullStatus("job", JobState.STARTED, "r/app:v1"), 0.5)
    assert planning[0].startswith("r/app:v1:  resolving")
