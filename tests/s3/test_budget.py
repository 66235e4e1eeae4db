"""The disk budget on an S3 store (``max_bytes`` over a listing of the bucket): an
ingest of known size that does not fit is refused before anything is written, one of
unknown size stops at the cap keeping what it wrote; before refusing, the
``on_pressure`` hook (a gc with INGESTQ_GC_ON_PRESSURE) runs once (against SeaweedFS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingestq import errdefs
from ingestq.jobs.config import Settings, open_store
from ingestq.s3 import S3Location, S3Store
from ingestq.s3.gc import collect
from ingestq.store import Descriptor, Digest
from ingestq.store.budget import Budget
from ingestq.store.gc import GcOptions
from ingestq.worker.cli import cli
from tests.servers.seaweed import S3Endpoint


@pytest.fixture
def location(s3_bucket: str, s3_prefix: str) -> S3Location:
    return S3Location(s3_bucket, s3_prefix)


def put(store: S3Store, data: bytes) -> Digest:
    digest = Digest.from_bytes(data)
    with store.writer(f"put-{digest.encoded[:12]}", Descriptor(digest, len(data))) as w:
        w.write(data)
        w.commit(len(data), digest)
    return digest


def test_used_counts_blobs_and_partial_ingests(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    store = S3Store(location, s3_endpoint.client(), tmp_path)
    assert store.used() == 0
    put(store, os.urandom(30_000))
    with store.writer("partial") as w:
        w.write(os.urandom(1_000))
    assert store.used() == 31_000


def test_an_ingest_of_known_size_that_does_not_fit_writes_nothing(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    store = S3Store(location, s3_endpoint.client(), tmp_path, budget=Budget(max_bytes=100_000))
    put(store, os.urandom(60_000))
    data = os.urandom(50_000)
    with pytest.raises(errdefs.ResourceExhausted, match=r"60000 bytes .* in use, 50000 more"):
        store.writer("big", Descriptor(Digest.from_bytes(data), len(data)))
    assert (store.list_statuses(), store.multipart_uploads()) == ([], [])
    small = os.urandom(40_000)
    assert store.exists(put(store, small))


def test_an_ingest_of_unknown_size_stops_at_the_cap_and_keeps_its_prefix(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    store = S3Store(location, s3_endpoint.client(), tmp_path, budget=Budget(max_bytes=50_000))
    put(store, os.urandom(10_000))
    data = os.urandom(60_000)
    with store.writer("unknown") as w:
        w.write(data[:30_000])
        with pytest.raises(errdefs.ResourceExhausted, match="reached at offset 40000"):
            w.write(data[30_000:])
    assert store.status("unknown").offset == 40_000
    roomy = S3Store(location, s3_endpoint.client(), tmp_path, budget=Budget(max_bytes=80_000))
    with roomy.writer("unknown") as w:  # resumed once the budget is raised
        assert w.status().offset == 40_000
        w.write(data[40_000:])
        info = w.commit(len(data), Digest.from_bytes(data))
    assert info.size == len(data)


def test_a_free_space_reserve_is_unimplemented(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    with pytest.raises(errdefs.Unimplemented, match="INGESTQ_MIN_FREE"):
        S3Store(location, s3_endpoint.client(), tmp_path, budget=Budget(min_free=1))


def test_on_pressure_runs_once_before_refusing_and_a_gc_makes_room(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    """Garbage (no image needs it) fills the budget: each kind of write runs the hook
    once before it would be refused; a gc there frees the garbage and the write goes in."""
    store = S3Store(location, s3_endpoint.client(), tmp_path, budget=Budget(max_bytes=100_000))
    calls: list[int] = []

    def gc() -> None:
        calls.append(len(collect(store, GcOptions()).blobs))

    store.on_pressure = gc
    garbage = put(store, os.urandom(70_000))
    big = os.urandom(50_000)
    assert store.exists(put(store, big))  # known size, through a writer
    assert (calls, store.exists(garbage)) == ([1], False)
    # A small put: the same, once.
    put(store, os.urandom(40_000))  # garbage again: 90000 in use
    small = os.urandom(20_000)
    store.put("small", Descriptor(Digest.from_bytes(small), len(small)), small)
    assert calls == [1, 2]
    # Unknown size: the writer runs it once when it reaches the cap.
    put(store, os.urandom(70_000))  # 90000 in use
    with store.writer("unknown") as w:
        w.write(os.urandom(30_000))
        w.commit(0)
    assert calls == [1, 2, 2]  # the new garbage and the small blob (no image needs it)
    assert store.used() == 30_000


def test_a_hook_that_frees_nothing_is_called_once_then_the_write_is_refused(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    store = S3Store(location, s3_endpoint.client(), tmp_path, budget=Budget(max_bytes=50_000))
    calls: list[str] = []
    store.on_pressure = lambda: calls.append("gc")
    put(store, os.urandom(40_000))
    data = os.urandom(20_000)
    desc = Descriptor(Digest.from_bytes(data), len(data))
    with pytest.raises(errdefs.ResourceExhausted):
        store.writer("known", desc)
    with pytest.raises(errdefs.ResourceExhausted):
        store.put("small", desc, data)
    with store.writer("unknown") as w, pytest.raises(errdefs.ResourceExhausted):
        w.write(data)
    assert calls == ["gc", "gc", "gc"]


def test_gc_on_pressure_is_wired_for_an_s3_store(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INGESTQ_GC_ON_PRESSURE=1 on an s3:// store: the embedded ``ingest`` job collects
    the garbage once and the ingest goes in; without it the ingest is refused (18)."""
    for name, value in s3_endpoint.env().items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "host"
    base = {"INGESTQ_ROOT": str(root), "INGESTQ_STORE": str(location), "INGESTQ_MAX_BYTES": "3M"}
    assert open_store(Settings.from_env(base)).on_pressure is None
    store = open_store(Settings.from_env({**base, "INGESTQ_GC_ON_PRESSURE": "1"}))
    assert store.on_pressure is not None
    garbage = put(store, os.urandom(2 * 1024 * 1024))
    src = tmp_path / "new.bin"
    src.write_bytes(os.urandom(2 * 1024 * 1024))
    digest = Digest.from_bytes(src.read_bytes())
    args = ["ingest", str(src), "--digest", str(digest), "--size", str(src.stat().st_size)]
    r = CliRunner().invoke(cli, args, env=base)
    assert r.exit_code == 18, r.output
    assert store.exists(garbage)
    r = CliRunner().invoke(cli, args, env={**base, "INGESTQ_GC_ON_PRESSURE": "1"})
    assert r.exit_code == 0, r.output
    assert (store.exists(garbage), store.exists(digest)) == (False, True)
