"""The ingest core's small-blob path: content of known digest and size up to the store's
threshold is read whole under the ref's lock and committed with one ``put`` (no ingest
directory); a local file takes no lock, and one of no known digest is hashed in memory
when its size fits; everything else takes the resumable writer path."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.fetch.files import FileSource
from ingestq.ingest.attempt import ingest_once
from ingestq.ingest.outcome import IngestResult, RefBusy
from ingestq.ingest.request import IngestRequest, make_request
from ingestq.store import read_blob
from ingestq.store.digest import Digest
from ingestq.store.local import LocalStore
from ingestq.store.locks import new_holder_id
from ingestq.store.protocols import Writer
from tests.ingest.helpers import BytesSource, Recorder


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store", fsync=False, small_blob_max=64 * 1024)


def _request(data: bytes, labels: dict[str, str] | None = None) -> IngestRequest:
    digest = Digest.from_bytes(data)
    return make_request({"type": "memory"}, "memory:test", digest=digest, size=len(data),
                        labels=labels)  # fmt: skip


def _ingest_dirs(store: LocalStore) -> list[str]:
    ingest = store.root / "ingest"
    return sorted(os.listdir(ingest)) if ingest.exists() else []


def test_a_small_known_blob_is_put_without_an_ingest_directory(store: LocalStore) -> None:
    data = os.urandom(4096)
    hooks = Recorder()
    result = ingest_once(store, BytesSource(data), _request(data, labels={"a": "b"}), hooks=hooks)
    assert result.fetched and result.bytes_fetched == 4096
    assert result.info.digest == Digest.from_bytes(data) and result.info.labels == {"a": "b"}
    assert read_blob(store, result.info.digest) == data
    assert _ingest_dirs(store) == []
    assert hooks.names()[0] == "started" and hooks.names()[-1] == "done"


def test_a_short_small_body_is_data_loss_and_keeps_nothing(store: LocalStore) -> None:
    data = os.urandom(4096)
    with pytest.raises(errdefs.DataLoss):
        ingest_once(store, BytesSource(data[:1000], announce=None), _request(data))
    assert _ingest_dirs(store) == []
    assert not store.exists(Digest.from_bytes(data))
    assert ingest_once(store, BytesSource(data), _request(data)).fetched


def test_wrong_small_content_commits_nothing(store: LocalStore) -> None:
    data = os.urandom(4096)
    with pytest.raises(errdefs.FailedPrecondition):
        ingest_once(store, BytesSource(os.urandom(4096)), _request(data))
    assert _ingest_dirs(store) == [] and list(store.walk()) == []


def test_a_locked_ref_is_ref_busy_and_nothing_is_fetched(store: LocalStore) -> None:
    data = os.urandom(4096)
    req = _request(data)
    source = BytesSource(data)
    lease = store.locker.try_lock(req.ref, new_holder_id())
    try:
        with pytest.raises(RefBusy):
            ingest_once(store, source, req)
    finally:
        lease.release()
    assert source.opened == []


def test_a_committed_blob_is_not_fetched_again(store: LocalStore) -> None:
    data = os.urandom(4096)
    ingest_once(store, BytesSource(data), _request(data))
    source = BytesSource(data)
    result = ingest_once(store, source, _request(data))
    assert not result.fetched and source.opened == []


def test_content_over_the_threshold_takes_the_resumable_writer(store: LocalStore) -> None:
    data = os.urandom(64 * 1024 + 1)
    with pytest.raises(errdefs.DataLoss):
        ingest_once(store, BytesSource(data[:30000], announce=None), _request(data))
    assert len(_ingest_dirs(store)) == 1  # the prefix is kept for a resume
    result = ingest_once(store, BytesSource(data), _request(data))
    assert result.fetched and result.resumed_from == 30000


def _file_request(path: Path, **kw: object) -> IngestRequest:
    return make_request({"type": "file", "path": str(path)}, str(path), **kw)  # type: ignore[arg-type]


def _small_file(
    tmp_path: Path, known: bool = False, size: int = 4096
) -> tuple[bytes, Path, dict[str, object]]:
    """A file of ``size`` random bytes, and the request arguments that give its digest
    and size (if ``known``)."""
    data = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    kw: dict[str, object] = {"digest": Digest.from_bytes(data), "size": len(data)} if known else {}
    return data, path, kw


class _OnFirstCancelCheck(Recorder):
    """Runs ``action`` when the core first asks whether the job is canceled: the file
    is open (when the core needs its size) and nothing is read or put yet."""

    def __init__(self, action: Callable[[], object]) -> None:
        super().__init__()
        self._action: Callable[[], object] | None = action

    def cancelled(self) -> bool:
        action, self._action = self._action, None
        if action is not None:
            action()
        return False


def test_a_small_file_is_put_while_its_ref_is_locked(store: LocalStore, tmp_path: Path) -> None:
    data, path, _ = _small_file(tmp_path)
    req = _file_request(path, digest=Digest.from_bytes(data), size=len(data))
    lease = store.locker.try_lock(req.ref, new_holder_id())
    try:  # a file takes no single-flight lock: reading it twice costs less
        result = ingest_once(store, FileSource(path, None), req)
    finally:
        lease.release()
    assert result.fetched and read_blob(store, result.info.digest) == data
    assert _ingest_dirs(store) == []


def test_a_small_file_of_no_known_digest_is_hashed_and_put(
    store: LocalStore, tmp_path: Path
) -> None:
    data, path, _ = _small_file(tmp_path, size=5000)
    hooks = Recorder()
    req = _file_request(path, labels={"a": "b"})
    lease = store.locker.try_lock(req.ref, new_holder_id())
    try:  # no writer (it would find the ref locked): one put
        result = ingest_once(store, FileSource(path, None), req, hooks=hooks)
    finally:
        lease.release()
    assert result.fetched and result.bytes_fetched == len(data)
    assert result.info.digest == Digest.from_bytes(data) and result.info.labels == {"a": "b"}
    assert read_blob(store, result.info.digest) == data
    assert _ingest_dirs(store) == []
    assert hooks.names()[0] == "started" and hooks.names()[-1] == "done"
    # Again, with other labels: the blob is there, the labels are merged.
    again = ingest_once(store, FileSource(path, None), _file_request(path, labels={"c": "d"}))
    assert again.info.digest == result.info.digest
    assert again.info.labels == {"a": "b", "c": "d"}


def test_a_small_file_that_grows_while_read_takes_the_writer(
    store: LocalStore, tmp_path: Path
) -> None:
    data, path, _ = _small_file(tmp_path)

    def grow() -> None:
        with path.open("ab") as f:
            f.write(b"more")

    result = ingest_once(store, FileSource(path, None), _file_request(path),
                         hooks=_OnFirstCancelCheck(grow))  # fmt: skip
    assert read_blob(store, result.info.digest) == data + b"more"  # the whole file, not 4096


def test_a_small_file_that_shrinks_while_read_is_data_loss(
    store: LocalStore, tmp_path: Path
) -> None:
    _, path, _ = _small_file(tmp_path)
    with pytest.raises(errdefs.DataLoss):
        ingest_once(store, FileSource(path, None), _file_request(path),
                    hooks=_OnFirstCancelCheck(lambda: os.truncate(path, 100)))  # fmt: skip
    assert list(store.walk()) == [] and _ingest_dirs(store) == []


def test_a_canceled_small_file_commits_nothing(store: LocalStore, tmp_path: Path) -> None:
    data, path, _ = _small_file(tmp_path)
    for kw in ({}, {"digest": Digest.from_bytes(data), "size": len(data)}):
        with pytest.raises(errdefs.Canceled):
            ingest_once(store, FileSource(path, None), _file_request(path, **kw),
                        hooks=Recorder(cancel_at=0))  # fmt: skip
    assert list(store.walk()) == [] and _ingest_dirs(store) == []


def test_a_file_over_the_threshold_of_no_known_digest_takes_the_writer(
    store: LocalStore, tmp_path: Path
) -> None:
    data = os.urandom(64 * 1024 + 1)
    path = tmp_path / "blob"
    path.write_bytes(data)
    req = _file_request(path)
    lease = store.locker.try_lock(req.ref, new_holder_id())
    try:  # the writer path: it takes the ref's lock
        with pytest.raises(RefBusy):
            ingest_once(store, FileSource(path, None), req)
    finally:
        lease.release()
    result = ingest_once(store, FileSource(path, None), req)
    assert read_blob(store, result.info.digest) == data


@pytest.mark.parametrize("known", [True, False], ids=["digest", "no-digest"])
def test_two_ingests_of_one_small_file_at_once_both_succeed_with_both_labels(
    store: LocalStore, tmp_path: Path, known: bool
) -> None:
    data, path, kw = _small_file(tmp_path, known)
    barrier = threading.Barrier(2)
    results: list[IngestResult | Exception | None] = [None, None]

    def run(i: int) -> None:
        req = _file_request(path, labels={f"by-{i}": "yes"}, **kw)
        try:
            # Both wait with the file open, so they read and put at the same time.
            hooks = _OnFirstCancelCheck(lambda: barrier.wait(timeout=30))
            results[i] = ingest_once(store, FileSource(path, None), req, hooks=hooks)
        except Exception as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    done = [r for r in results if isinstance(r, IngestResult)]
    assert len(done) == 2, results
    digest = Digest.from_bytes(data)
    assert [r.info.digest for r in done] == [digest, digest]
    assert [info.digest for info in store.walk()] == [digest]
    assert read_blob(store, digest) == data
    assert store.info(digest).labels == {"by-0": "yes", "by-1": "yes"}
    assert _ingest_dirs(store) == []


@pytest.mark.parametrize("known", [True, False], ids=["digest", "no-digest"])
def test_a_small_file_whose_ref_gets_a_writer_meanwhile_is_ref_busy(
    store: LocalStore, tmp_path: Path, known: bool
) -> None:
    data, path, kw = _small_file(tmp_path, known)
    req = _file_request(path, **kw)
    writers: list[Writer] = []
    # Another job takes the writer path on the ref after this one found no ingest of
    # it, before its put.
    hooks = _OnFirstCancelCheck(lambda: writers.append(store.writer(req.ref)))
    with pytest.raises(RefBusy):  # waited for like any locked ref, not a source failure
        ingest_once(store, FileSource(path, None), req, hooks=hooks)
    for w in writers:
        w.close()
    result = ingest_once(store, FileSource(path, None), req)  # the next attempt commits it
    assert read_blob(store, result.info.digest) == data
