"""containerd's real ``ctr`` (1.6, Debian package) against ingestq: ``content ingest | ls
| get | active | rm | label | fetch``, AlreadyExists as a silent success, a locked ref
retried until free, and error messages shown exactly as ingestq produced them."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, LocalStore
from tests.api.conftest import Served, ServerFactory, run_ctr
from tests.servers import Registry, make_tar_layer, push_image
from tests.servers.util import require_binary, wait_until


def source(tmp_path: Path, size: int, seed: int = 0, name: str = "src.bin") -> tuple[Path, bytes]:
    data = random.Random(seed).randbytes(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ok(done: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done


def test_ingest_then_get_returns_identical_bytes(api_server: Served, tmp_path: Path) -> None:
    path, data = source(tmp_path, 3 * (1 << 20) + 1)
    done = ok(api_server.ctr("content", "ingest", "my-ingest", stdin_path=path))
    assert (done.stdout, done.stderr) == (b"", b"")
    got = ok(api_server.ctr("content", "get", sha(data)))
    assert got.stdout == data
    listing = ok(api_server.ctr("content", "ls", "-q")).stdout.decode().split()
    assert listing == [sha(data)]
    assert api_server.store is not None and api_server.store.exists(Digest.parse(sha(data)))


def test_ingest_with_expected_digest_and_size(api_server: Served, tmp_path: Path) -> None:
    path, data = source(tmp_path, 100_000, seed=1)
    ok(
        api_server.ctr(
            "content",
            "ingest",
            "--expected-size",
            str(len(data)),
            "--expected-digest",
            sha(data),
            "expected",
            stdin_path=path,
        )
    )
    assert api_server.client().info(sha(data)).size == len(data)


def test_already_existing_content_is_a_silent_success(api_server: Served, tmp_path: Path) -> None:
    path, data = source(tmp_path, 5000, seed=2)
    ok(api_server.ctr("content", "ingest", "one", stdin_path=path))
    # AlreadyExists when the writer opens (expected digest known) ...
    again = api_server.ctr(
        "content", "ingest", "--expected-digest", sha(data), "two", stdin_path=path
    )
    assert (again.returncode, again.stdout, again.stderr) == (0, b"", b"")
    # ... and at commit (no expected digest: the bytes are sent, commit finds them)
    blind = api_server.ctr("content", "ingest", "three", stdin_path=path)
    assert (blind.returncode, blind.stdout, blind.stderr) == (0, b"", b"")
    assert api_server.client().list_statuses() == []  # no ingest left behind


def test_ls_label_and_rm(api_server: Served, tmp_path: Path) -> None:
    path, data = source(tmp_path, 10, seed=3)
    ok(api_server.ctr("content", "ingest", "labels", stdin_path=path))
    d = sha(data)
    printed = ok(api_server.ctr("content", "label", d, "team=core", "pinned")).stdout
    assert set(printed.decode().strip().split(",")) == {"pinned=true", "team=core"}
    assert dict(api_server.client().info(d).labels) == {"team": "core", "pinned": "true"}
    row = ok(api_server.ctr("content", "ls")).stdout.decode().splitlines()[1].split("\t")
    assert (row[0], row[1]) == (d, "10B")
    assert set(row[-1].split(",")) == {"pinned=true", "team=core"}
    assert ok(api_server.ctr("content", "label", d, "pinned=")).stdout == b"team=core\n"
    assert ok(api_server.ctr("content", "rm", d)).stdout.decode().split() == [d]
    gone = ok(api_server.ctr("content", "rm", d))  # NotFound is skipped silently by ctr
    assert (gone.stdout, gone.stderr) == (b"", b"")
    assert ok(api_server.ctr("content", "ls", "-q")).stdout == b""


def test_active_shows_a_partial_ingest(api_server: Served, tmp_path: Path) -> None:
    path, _ = source(tmp_path, 100, seed=4)
    short = api_server.ctr(
        "content", "ingest", "--expected-size", "5000", "partial-ref", stdin_path=path
    )
    assert short.returncode == 1
    assert short.stderr == b"ctr: failed to read expected number of bytes: unexpected EOF\n"
    rows = ok(api_server.ctr("content", "active")).stdout.decode().splitlines()
    assert rows[0].split() == ["REF", "SIZE", "AGE"]
    assert rows[1].split("\t")[:2] == ["partial-ref", "100B"]
    assert len(rows) == 2
    assert len(ok(api_server.ctr("content", "active", "ref~=^other")).stdout.splitlines()) == 1


def test_not_found_is_shown_exactly_as_the_store_raised_it(api_server: Served) -> None:
    assert api_server.store is not None
    missing = sha(b"never stored")
    with pytest.raises(errdefs.NotFound) as raised:
        api_server.store.info(Digest.parse(missing))
    for command in (("content", "get", missing), ("content", "label", missing)):
        done = api_server.ctr(*command)
        assert done.returncode == 1
        assert done.stderr.decode() == f"ctr: {raised.value}\n"


def test_other_errors_keep_their_message(api_server: Served) -> None:
    done = run_ctr(api_server.socket, "content", "ls", namespace="bad ns")
    assert done.returncode == 1
    assert done.stderr.decode() == (
        'ctr: namespace validation: identifier "bad ns" must match '
        "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument\n"
    )


def test_namespaces_share_the_store(api_server: Served, tmp_path: Path) -> None:
    path, data = source(tmp_path, 64, seed=5)
    ok(
        run_ctr(
            api_server.socket, "content", "ingest", "shared", namespace="k8s.io", stdin_path=path
        )
    )
    assert ok(api_server.ctr("content", "ls", "-q")).stdout.decode().split() == [sha(data)]


def test_version_and_no_deprecation_warning(api_server: Served) -> None:
    done = ok(api_server.ctr("version"))
    out = done.stdout.decode()
    assert "Server:" in out and "Version:  ingestq " in out
    assert b"deprecation" not in done.stderr.lower()
    assert b"level=warning" not in done.stderr


def _locked_lines(served: Served, ref: str) -> int:
    return sum(f"ref {ref} locked for" in line for line in served.log().splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("holder_outcome", ["releases", "commits"])
def test_a_locked_ref_is_retried_by_ctr_until_free(
    serve_process_factory: ServerFactory, tmp_path: Path, holder_outcome: str
) -> None:
    """A worker-like writer (a LocalStore in this test process, on the same root) holds
    the ref; ``ctr content ingest`` keeps retrying Unavailable until it is free, then
    succeeds (or finds the content already committed: a silent success)."""
    served = serve_process_factory("--log-level", "debug", "--lock-wait", "0")
    path, data = source(tmp_path, 200_000, seed=6)
    holder_store = LocalStore(served.root, fsync=False)
    desc = Descriptor(Digest.parse(sha(data)), len(data))
    holder = holder_store.writer("contended", desc)
    argv = [
        require_binary("ctr"),
        "-a",
        str(served.socket),
        "content",
        "ingest",
        "--expected-size",
        str(len(data)),
        "--expected-digest",
        sha(data),
        "contended",
    ]
    with open(path, "rb") as stdin:
        ctr = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(
            lambda: _locked_lines(served, "contended") >= 3,
            30.0,
            "ctr to be refused the locked ref three times",
        )
        assert ctr.poll() is None  # still retrying
        if holder_outcome == "commits":
            holder.write(data)
            holder.commit(len(data), desc.digest)
        else:
            holder.write(data[:1000])  # partial data: ctr resumes from a regular file
            holder.close()
        out, err = ctr.communicate(timeout=30)
    finally:
        if ctr.poll() is None:
            ctr.kill()
            ctr.wait()
        holder.close()
    assert (ctr.returncode, out, err) == (0, b"", b"")
    with holder_store.reader_at(desc.digest) as ra:
        assert ra.read_at(0, ra.size) == data
    assert holder_store.list_statuses() == []


@pytest.mark.slow
def test_fetch_from_a_registry(registry: Registry, api_server: Served) -> None:
    layers = [
        make_tar_layer({"a.txt": b"hello"}),
        make_tar_layer({"b.bin": random.Random(7).randbytes(3 << 20)}, compress=True),
    ]
    manifest = push_image(registry, "library/demo", "v1", layers)
    ref = f"{registry.host}/library/demo:v1"
    done = ok(api_server.ctr("content", "fetch", "--plain-http", ref, timeout=120))
    assert b"level=warning" not in done.stderr
    client = api_server.client()
    for layer in layers:
        with client.reader_at(sha(layer)) as ra:
            assert ra.read_at(0, ra.size) == layer
        labels = client.info(sha(layer)).labels
        assert labels[f"containerd.io/distribution.source.{registry.host.split(':')[0]}"] == (
            "library/demo"
        )
    root_labels = client.info(manifest).labels
    assert root_labels["containerd.io/gc.ref.content.l.0"] == sha(layers[0])
    index = json.loads((api_server.root / "index.json").read_text())
    names = {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
    }
    assert names == {ref: manifest}
    images = ok(api_server.ctr("images", "ls", "-q")).stdout.decode().split()
    assert images == [ref]
    assert client.list_statuses() == []  # every ingest committed
    leases = json.loads((api_server.root / "leases" / "default.json").read_text())
    assert leases == {}  # fetch deleted its lease
    again = ok(api_server.ctr("content", "fetch", "--plain-http", ref, timeout=120))
    assert b"level=warning" not in again.stderr  # everything AlreadyExists, image updated


def test_edit_writes_the_edited_blob(api_server: Served, tmp_path: Path) -> None:
    """``ctr content edit`` opens ``edit-<digest>`` directly, WRITEs the edited bytes and
    commits with the digest the server reported last."""
    path, data = source(tmp_path, 2000, seed=8)
    ok(api_server.ctr("content", "ingest", "to-edit", stdin_path=path))
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nprintf edited > "$1"\n')  # rewrites the file in place
    editor.chmod(0o755)
    done = ok(api_server.ctr("content", "edit", "--editor", str(editor), sha(data)))
    assert done.stdout.decode().strip() == sha(b"edited")
    assert ok(api_server.ctr("content", "get", sha(b"edited"))).stdout == b"edited"
    assert api_server.client().list_statuses() == []
