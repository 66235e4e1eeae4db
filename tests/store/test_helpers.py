"""The content helpers: open_writer (backoff bounds, AlreadyExists short-circuit,
timeout), copy (resume by seek, discard, truncate-restart; short and long sources),
write_blob and read_blob."""

from __future__ import annotations

import io
import random
import threading
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store import (
    Backoff,
    Descriptor,
    Digest,
    LocalStore,
    copy,
    open_writer,
    read_blob,
    write_blob,
)
from ingestq.store.helpers import list_content, seek_source
from ingestq.store.protocols import Writer
from ingestq.store.values import Descriptor as Desc


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store", fsync=False)


def data_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# Backoff -----------------------------------------------------------------------------
def test_backoff_bounds_double_from_16ms_to_2048ms() -> None:
    b = Backoff(rng=random.Random(1))
    bounds = []
    for _ in range(12):
        bound = b.bound
        delay = b.next_delay()
        assert 0 <= delay < bound
        bounds.append(round(bound * 1000))
    assert bounds == [16, 32, 64, 128, 256, 512, 1024, 2048, 2048, 2048, 2048, 2048]


def test_backoff_jitter_is_spread_over_the_bound() -> None:
    b = Backoff(first=1.0, cap=1.0, rng=random.Random(2))
    delays = [b.next_delay() for _ in range(2000)]
    assert min(delays) < 0.05 and max(delays) > 0.95


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(errdefs.InvalidArgument):
        Backoff(first=0)
    with pytest.raises(errdefs.InvalidArgument):
        Backoff(first=2, cap=1)


# open_writer -------------------------------------------------------------------------
class FakeIngester:
    """Raises the scripted errors in turn, then returns a sentinel writer."""

    def __init__(self, *script: BaseException) -> None:
        self.script = list(script)
        self.calls = 0
        self.writer_obj = object()

    def writer(self, ref: str, expected: Descriptor | None = None, *, total: int = 0) -> Writer:
        self.calls += 1
        if self.script:
            raise self.script.pop(0)
        return self.writer_obj  # type: ignore[return-value]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s

    def __call__(self) -> float:
        return self.now


def locked(n: int) -> list[BaseException]:
    return [errdefs.Unavailable(f"ref r locked for {i}s") for i in range(n)]


def test_open_writer_retries_unavailable_with_growing_bounded_delays() -> None:
    ing = FakeIngester(*locked(10))
    clock = FakeClock()
    waits: list[str] = []
    w = open_writer(
        ing,
        "r",
        backoff=Backoff(rng=random.Random(3)),
        sleep=clock.sleep,
        clock=clock,
        on_wait=lambda e: waits.append(str(e)),
    )
    assert w is ing.writer_obj
    assert ing.calls == 11
    assert len(clock.slept) == 10 == len(waits)
    bounds = [0.016 * 2**i for i in range(8)] + [2.048, 2.048]
    assert all(0 <= s < b for s, b in zip(clock.slept, bounds, strict=True))
    assert waits[0] == "ref r locked for 0s: unavailable"


def test_open_writer_returns_already_exists_as_soon_as_content_exists() -> None:
    ing = FakeIngester(*locked(3), errdefs.AlreadyExists("content sha256:x"))
    clock = FakeClock()
    with pytest.raises(errdefs.AlreadyExists):
        open_writer(ing, "r", sleep=clock.sleep, clock=clock)
    assert ing.calls == 4
    assert len(clock.slept) == 3


@pytest.mark.parametrize(
    "err", [errdefs.NotFound("x"), errdefs.InvalidArgument("x"), errdefs.PermissionDenied("x")]
)
def test_open_writer_does_not_retry_other_errors(err: errdefs.ErrdefsError) -> None:
    ing = FakeIngester(err)
    clock = FakeClock()
    with pytest.raises(type(err)):
        open_writer(ing, "r", sleep=clock.sleep, clock=clock)
    assert (ing.calls, clock.slept) == (1, [])


def test_open_writer_gives_up_after_the_timeout_with_a_last_try_at_the_deadline() -> None:
    ing = FakeIngester(*locked(1000))
    clock = FakeClock()
    with pytest.raises(errdefs.Unavailable) as exc:
        open_writer(ing, "r", timeout=5.0, sleep=clock.sleep, clock=clock)
    assert "ref r locked" in str(exc.value)
    assert clock.now == pytest.approx(5.0)  # never sleeps past the deadline
    assert sum(clock.slept) == pytest.approx(5.0)
    assert ing.calls == len(clock.slept) + 1


def test_open_writer_with_zero_timeout_tries_once() -> None:
    ing = FakeIngester(*locked(5))
    clock = FakeClock()
    with pytest.raises(errdefs.Unavailable):
        open_writer(ing, "r", timeout=0, sleep=clock.sleep, clock=clock)
    assert (ing.calls, clock.slept) == (1, [])


def test_open_writer_waits_for_a_real_holder_then_sees_already_exists(store: LocalStore) -> None:
    data = data_of(10_000, 1)
    desc = Descriptor(Digest.from_bytes(data), len(data))
    holder = store.writer("shared-ref", desc)
    holder.write(data)
    waited = threading.Event()
    done = threading.Event()

    def finish() -> None:
        assert waited.wait(30)
        holder.commit(len(data), desc.digest)
        done.set()

    t = threading.Thread(target=finish)
    t.start()
    waits: list[errdefs.Unavailable] = []

    def on_wait(e: errdefs.Unavailable) -> None:
        waits.append(e)
        waited.set()
        done.wait(30)  # the next try happens after the holder committed

    with pytest.raises(errdefs.AlreadyExists):
        open_writer(store, "shared-ref", desc, on_wait=on_wait)
    t.join(30)
    assert len(waits) == 1
    assert "ref shared-ref locked for" in str(waits[0])


# copy --------------------------------------------------------------------------------
class Recording(io.BytesIO):
    """A seekable source that records seeks and bytes read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.seeks: list[int] = []
        self.read_bytes = 0

    def seek(self, pos: int, whence: int = 0) -> int:
        self.seeks.append(pos)
        return super().seek(pos, whence)

    def read(self, n: int | None = -1) -> bytes:
        out = super().read(n)
        self.read_bytes += len(out)
        return out

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = super().readinto(b)
        self.read_bytes += n
        return n


class Pipe(io.RawIOBase):
    """A non-seekable source that counts the bytes it hands out."""

    def __init__(self, data: bytes) -> None:
        self._src = io.BytesIO(data)
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self._src.read(min(len(b), 100_000))  # short reads, like a pipe
        b[: len(chunk)] = chunk
        self.read_bytes += len(chunk)
        return len(chunk)


class BrokenSeek(io.BytesIO):
    def seek(self, pos: int, whence: int = 0) -> int:
        raise OSError(29, "Illegal seek")


def partial(store: LocalStore, ref: str, data: bytes, n: int) -> None:
    w = store.writer(ref)
    w.write(data[:n])
    w.close()


def test_copy_resumes_by_seeking(store: LocalStore) -> None:
    data = data_of(3_000_000, 2)
    partial(store, "seek", data, 1_234_567)
    src = Recording(data)
    with store.writer("seek") as w:
        info = copy(w, src, len(data), Digest.from_bytes(data))
    assert info is not None and read_blob(store, info.digest) == data
    assert src.seeks == [1_234_567]
    assert src.read_bytes == len(data) - 1_234_567


def test_copy_resumes_by_discarding(store: LocalStore) -> None:
    data = data_of(3_000_000, 3)
    partial(store, "discard", data, 2_000_000)
    src = Pipe(data)
    with store.writer("discard") as w:
        info = copy(w, src, len(data), Digest.from_bytes(data))
    assert info is not None and read_blob(store, info.digest) == data
    assert src.read_bytes == len(data)  # the first 2 MB were read and thrown away


def test_copy_restarts_when_the_source_cannot_be_positioned(store: LocalStore) -> None:
    data = data_of(1_500_000, 4)
    partial(store, "restart", b"wrong bytes that must go" * 1000, 24_000)
    src = Pipe(data)
    with store.writer("restart") as w:
        info = copy(w, src, len(data), Digest.from_bytes(data), discard=False)
    assert info is not None and read_blob(store, info.digest) == data
    assert src.read_bytes == len(data)


def test_copy_restarts_an_ingest_longer_than_the_expected_size(store: LocalStore) -> None:
    data = data_of(10_000, 5)
    partial(store, "too-long", data + b"extra", len(data) + 5)
    with store.writer("too-long") as w:
        info = copy(w, Pipe(data), len(data), Digest.from_bytes(data), discard=False)
    assert info is not None and read_blob(store, info.digest) == data


def test_copy_from_a_short_source_is_data_loss_and_keeps_what_arrived(store: LocalStore) -> None:
    data = data_of(500_000, 6)
    with store.writer("short") as w, pytest.raises(errdefs.DataLoss) as exc:
        copy(w, Pipe(data[:300_000]), len(data), Digest.from_bytes(data))
    assert "got 300000 of 500000" in str(exc.value)
    assert store.status("short").offset == 300_000
    with store.writer("short") as w:  # and the rest can follow later
        assert copy(w, io.BytesIO(data), len(data), Digest.from_bytes(data)) is not None


def test_copy_from_a_long_source_is_failed_precondition(store: LocalStore) -> None:
    data = data_of(500_000, 7)
    with store.writer("long") as w, pytest.raises(errdefs.FailedPrecondition) as exc:
        copy(w, Pipe(data + b"surplus"), len(data), Digest.from_bytes(data))
    assert "longer than the expected 500000 bytes" in str(exc.value)
    assert store.status("long").offset <= len(data)


def test_copy_discard_past_the_end_of_the_source_is_data_loss(store: LocalStore) -> None:
    data = data_of(100_000, 8)
    partial(store, "discard-short", data, 90_000)
    with store.writer("discard-short") as w, pytest.raises(errdefs.DataLoss):
        copy(w, Pipe(data[:50_000]), len(data))


def test_copy_with_a_failing_seek_is_failed_precondition(store: LocalStore) -> None:
    data = data_of(100_000, 9)
    partial(store, "bad-seek", data, 10)
    with store.writer("bad-seek") as w, pytest.raises(errdefs.FailedPrecondition) as exc:
        copy(w, BrokenSeek(data), len(data))
    assert "failed to seek to offset 10" in str(exc.value)


def test_copy_wraps_commit_errors_and_keeps_their_kind(store: LocalStore) -> None:
    data = data_of(1000, 10)
    with store.writer("wrap") as w, pytest.raises(errdefs.FailedPrecondition) as exc:
        copy(w, io.BytesIO(data), len(data), Digest.from_bytes(b"other"))
    assert str(exc.value).startswith('failed commit on ref "wrap": unexpected commit digest')


def test_copy_treats_already_exists_as_success(store: LocalStore) -> None:
    data = data_of(1000, 11)
    w = store.writer("late")
    write_blob(store, "early", io.BytesIO(data), Descriptor(Digest.from_bytes(data), len(data)))
    with w:
        assert copy(w, io.BytesIO(data), len(data), Digest.from_bytes(data)) is None


def test_copy_reports_progress_and_takes_plain_readers(store: LocalStore) -> None:
    data = data_of(2_500_000, 12)

    class Plain:  # only read(n), no readinto, no seek
        def __init__(self) -> None:
            self.src = io.BytesIO(data)

        def read(self, n: int = -1, /) -> bytes:
            return self.src.read(n)

    seen: list[int] = []
    with store.writer("progress") as w:
        info = copy(w, Plain(), 0, None, {"a": "1"}, on_progress=seen.append)
    assert info is not None and dict(info.labels) == {"a": "1"}
    assert seen == sorted(seen) and seen[-1] == len(data)


def test_seek_source_without_discard_reports_it_cannot() -> None:
    assert seek_source(Pipe(b"abc"), 2, discard=False) is False
    assert seek_source(io.BytesIO(b"abc"), 2, discard=False) is True


# write_blob / read_blob ------------------------------------------------------------
def test_write_blob_writes_and_returns_info(store: LocalStore) -> None:
    data = data_of(100_000, 13)
    desc = Descriptor(Digest.from_bytes(data), len(data))
    info = write_blob(store, "wb", io.BytesIO(data), desc, {"k": "v"})
    assert (info.digest, info.size, dict(info.labels)) == (desc.digest, len(data), {"k": "v"})
    assert read_blob(store, desc) == data
    assert list_content(store, "labels.k==v") == [info]


def test_write_blob_times_out_on_a_held_ref(store: LocalStore) -> None:
    data = b"x"
    with store.writer("held"), pytest.raises(errdefs.Unavailable):
        write_blob(store, "held", io.BytesIO(data), Desc(Digest.from_bytes(data), 1), timeout=0.05)


def test_read_blob_checks_size_and_digest(store: LocalStore) -> None:
    data = b"manifest"
    info = write_blob(store, "m", io.BytesIO(data), Descriptor(Digest.from_bytes(data), 8))
    assert read_blob(store, info.digest) == data
    with pytest.raises(errdefs.DataLoss):
        read_blob(store, Descriptor(info.digest, 9))
    with pytest.raises(errdefs.NotFound):
        read_blob(store, Digest.from_bytes(b"absent"))
