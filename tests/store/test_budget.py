"""The store's disk budget (store/budget.py) on a real root: sizes, the before-write
refusal of an ingest of known size, an ingest of unknown size stopping exactly at the
limit and resuming once the budget is raised, other processes' bytes, the free-space
reserve on a small tmpfs, and the on_pressure hook."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, LocalStore
from ingestq.store.budget import Budget, measure, parse_size

KIB = 1 << 10
MIB = 1 << 20


def data(n: int, seed: int = 0) -> bytes:
    return (bytes([seed % 256]) + os.urandom(31)) * (n // 32) + os.urandom(n % 32)


def commit(store: LocalStore, ref: str, blob: bytes) -> None:
    with store.writer(ref, Descriptor(Digest.from_bytes(blob), len(blob))) as w:
        w.write(blob)
        w.commit(len(blob), Digest.from_bytes(blob))


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("512K", 512 * KIB),
        ("10G", 10 << 30),
        ("1.5T", 3 << 39),
        ("512MiB", 512 * MIB),
        ("2mb", 2 * MIB),
        (" 7 M ", 7 * MIB),
        ("0", 0),
    ],
)
def test_sizes_parse_with_binary_suffixes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "-1G", "1X", "1.2.3M", "ten", "1e3", "9" * 30])
def test_malformed_sizes_are_invalid_argument(text: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        parse_size(text)


def test_measure_counts_blobs_and_ingest_data_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, fsync=False)
    commit(store, "a", data(3000))
    with store.writer("partial") as w:
        w.write(data(700))
    assert measure(store.layout) == 3700


def test_measure_counts_quarantined_blobs(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, fsync=False)
    blob = data(3000)
    digest = Digest.from_bytes(blob)
    commit(store, "a", blob)
    store.blob_path(digest).chmod(0o644)
    store.blob_path(digest).write_bytes(blob[:1000])  # damaged on disk
    assert not store.blobs.committed(digest, len(blob))  # moved to quarantine/
    assert [p.stat().st_size for p in store.layout.quarantine.iterdir()] == [1000]
    assert measure(store.layout) == 1000


def test_an_ingest_of_known_size_that_does_not_fit_is_refused_before_any_write(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path, fsync=False, budget=Budget(max_bytes=MIB))
    commit(store, "first", data(600 * KIB, 1))
    blob = data(600 * KIB, 2)
    with pytest.raises(errdefs.ResourceExhausted) as exc:
        store.writer("second", Descriptor(Digest.from_bytes(blob), len(blob)))
    text = str(exc.value)
    assert "ingest second of 614400 bytes" in text
    assert f"store budget of {MIB} bytes" in text
    assert "614400 bytes (600.0 KiB) in use, 614400 more needed" in text
    assert store.list_statuses() == []  # no empty ingest is left behind
    with pytest.raises(errdefs.ResourceExhausted):  # a total without a digest too
        store.writer("third", total=len(blob))
    store.writer("fits", total=MIB - 600 * KIB).close()


def test_a_resumed_ingest_needs_room_only_for_its_rest(tmp_path: Path) -> None:
    blob = data(800 * KIB, 3)
    desc = Descriptor(Digest.from_bytes(blob), len(blob))
    LocalStore(tmp_path, fsync=False).writer("r", desc).close()
    with LocalStore(tmp_path, fsync=False).writer("r", desc) as w:
        w.write(blob[: 500 * KIB])
    tight = LocalStore(tmp_path, fsync=False, budget=Budget(max_bytes=MIB))
    with tight.writer("r", desc) as w:  # 500 KiB held + 300 KiB more <= 1 MiB
        w.write(blob[500 * KIB :])
        assert w.commit(len(blob), desc.digest).size == len(blob)


def test_an_ingest_of_unknown_size_stops_exactly_at_the_limit_and_resumes_when_raised(
    tmp_path: Path,
) -> None:
    blob = data(3 * MIB + 123, 4)
    small = LocalStore(tmp_path, fsync=False, budget=Budget(max_bytes=2 * MIB))
    commit(small, "other", data(100 * KIB, 5))
    with small.writer("big") as w:
        with pytest.raises(errdefs.ResourceExhausted) as exc:
            for i in range(0, len(blob), 256 * KIB):
                w.write(blob[i : i + 256 * KIB])
        assert "(kept for a resume)" in str(exc.value)
        assert "INGESTQ_MAX_BYTES" in str(exc.value)
        held = w.status().offset
        assert held == 2 * MIB - 100 * KIB  # exactly at the limit
        assert w.digest() == Digest.from_bytes(blob[:held])
    assert small.status("big").offset == held
    assert measure(small.layout) == 2 * MIB
    assert not small.exists(Digest.from_bytes(blob))  # nothing committed partially

    bigger = LocalStore(tmp_path, fsync=False, budget=Budget(max_bytes=4 * MIB))
    with bigger.writer("big") as w:
        assert w.status().offset == held
        w.write(blob[held:])
        info = w.commit(len(blob), Digest.from_bytes(blob))
    assert info.size == len(blob)
    assert measure(bigger.layout) == len(blob) + 100 * KIB


def test_bytes_written_by_another_process_count(tmp_path: Path) -> None:
    mine = LocalStore(tmp_path, fsync=False, budget=Budget(max_bytes=MIB))
    mine.writer("warm", total=10).close()  # the running figure is measured: 0 bytes
    blob = data(700 * KIB, 6)
    script = (
        "import sys; from ingestq.store import LocalStore, write_blob, Descriptor, Digest;"
        "b = open(sys.argv[2], 'rb').read();"
        "write_blob(LocalStore(sys.argv[1], fsync=False), 'x', open(sys.argv[2], 'rb'),"
        " Descriptor(Digest.from_bytes(b), len(b)))"
    )
    src = tmp_path.parent / f"{tmp_path.name}.src"
    src.write_bytes(blob)
    subprocess.run([sys.executable, "-c", script, str(tmp_path), str(src)], check=True)
    with pytest.raises(errdefs.ResourceExhausted, match=r"716800 bytes \(700.0 KiB\) in use"):
        mine.writer("y", total=400 * KIB)
    with mine.writer("z") as w, pytest.raises(errdefs.ResourceExhausted):
        w.write(data(400 * KIB, 7))
    assert mine.status("z").offset == MIB - 700 * KIB


def test_deleting_and_aborting_give_room_back(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, fsync=False, budget=Budget(max_bytes=MIB))
    blob = data(700 * KIB, 8)
    commit(store, "a", blob)
    with store.writer("p") as w:
        w.write(data(200 * KIB, 9))
    with pytest.raises(errdefs.ResourceExhausted):
        store.writer("b", total=500 * KIB)
    store.delete(Digest.from_bytes(blob))
    store.abort("p")
    with store.writer("b", total=MIB) as w:
        w.write(data(MIB, 10))


def test_on_pressure_runs_once_before_refusing_and_may_make_room(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, fsync=False, budget=Budget(max_bytes=MIB))
    blob = data(700 * KIB, 11)
    commit(store, "a", blob)
    calls: list[int] = []

    def collect() -> None:
        calls.append(1)
        if len(calls) == 1:
            store.blobs.delete(Digest.from_bytes(blob))  # a collector behind the meter's back

    store.meter.on_pressure = collect
    store.writer("b", total=600 * KIB).close()
    assert calls == [1]
    with pytest.raises(errdefs.ResourceExhausted):
        store.writer("c", total=2 * MIB)
    assert calls == [1, 1]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own, unmounted afterwards."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_the_free_space_reserve_refuses_known_sizes_and_stops_unknown_ones(
    small_tmpfs: Path,
) -> None:
    store = LocalStore(small_tmpfs / "root", fsync=False, budget=Budget(min_free=3 * MIB))
    free = store.meter.free()
    assert 3 * MIB < free <= 4 * MIB
    with pytest.raises(errdefs.ResourceExhausted) as exc:
        store.writer("known", total=2 * MIB)
    assert "free-space reserve of 3145728 bytes" in str(exc.value)
    assert "INGESTQ_MIN_FREE" in str(exc.value)
    assert "2097152 more needed" in str(exc.value)
    with store.writer("unknown") as w, pytest.raises(errdefs.ResourceExhausted):
        for _ in range(8):
            w.write(data(256 * KIB, 12))
    held = store.status("unknown").offset
    assert 0 < held <= free - 3 * MIB
    assert store.meter.free() >= 3 * MIB - 2 * 4096  # the reserve holds (to a page or two)
