"""One ingest attempt (:func:`ingest_once`) on a local store from an in-memory source:
what it commits, what it keeps for a resume, and the hook calls it makes in order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.ingest.attempt import CHUNK, ingest_once
from ingestq.ingest.outcome import RefBusy
from ingestq.ingest.request import IngestRequest, make_request
from ingestq.store.digest import Digest
from ingestq.store.local import LocalStore
from ingestq.store.values import Info
from tests.ingest.helpers import BytesSource, MiB, Recorder


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    # The resumable writer path: small known-size blobs would take put() instead
    # (tests/ingest/test_small_path.py).
    return LocalStore(tmp_path / "store", fsync=False, small_blob_max=0)


def _request(data: bytes, *, digest: bool = True, size: bool = True) -> IngestRequest:
    return make_request(
        {"type": "memory"},
        "memory:test",
        digest=Digest.from_bytes(data) if digest else None,
        size=len(data) if size else 0,
        labels={"team": "infra"},
    )


def test_a_fresh_ingest_reports_started_progress_per_chunk_then_done(store: LocalStore) -> None:
    data = os.urandom(2 * MiB + 5)
    req = _request(data)
    hooks = Recorder()
    result = ingest_once(store, BytesSource(data), req, hooks=hooks)
    assert result.fetched and result.bytes_fetched == len(data) and result.resumed_from == 0
    assert result.info.digest == req.digest and result.info.labels == {"team": "infra"}
    assert store.reader_at(result.info.digest).read_at(0, len(data)) == data
    total = len(data)
    assert hooks.events == [
        ("started", req.ref, "memory:test"),
        ("progress", 0, total),
        ("progress", CHUNK, total),
        ("progress", 2 * CHUNK, total),
        ("progress", total, total),
        ("done", result),
    ]


def test_an_unknown_size_reports_the_announced_total(store: LocalStore) -> None:
    data = os.urandom(1000)
    hooks = Recorder()
    ingest_once(store, BytesSource(data), _request(data, size=False), hooks=hooks)
    assert [e for e in hooks.events if e[0] == "progress"] == [
        ("progress", 0, 1000),
        ("progress", 1000, 1000),
    ]
    unannounced = Recorder()
    other = os.urandom(10)
    ingest_once(
        store, BytesSource(other, announce=None), _request(other, size=False), hooks=unannounced
    )
    assert next(e for e in unannounced.events if e[0] == "progress") == ("progress", 0, 0)


def test_a_committed_digest_fetches_nothing_and_reports_only_done(store: LocalStore) -> None:
    data = os.urandom(100)
    ingest_once(store, BytesSource(data), _request(data))
    source, hooks = BytesSource(data), Recorder()
    labelled = IngestRequest(
        {"type": "memory"}, "another-ref", Digest.from_bytes(data), 100, labels={"new": "1"}
    )
    result = ingest_once(store, source, labelled, hooks=hooks)
    assert not result.fetched and source.opened == []
    assert result.info.labels == {"team": "infra", "new": "1"}
    assert hooks.events == [("done", result)]


class _CollectedWhileLabelling(LocalStore):
    """A gc that removes the blob between the core's existence check and its label
    update: a real gc cannot be timed into that window, so this store runs the removal
    itself, once, as the update starts."""

    collect_on_update = True

    def update(self, info: Info, *fieldpaths: str) -> Info:
        if self.collect_on_update:
            self.collect_on_update = False
            self.delete(info.digest)
        return super().update(info, *fieldpaths)


def test_a_committed_blob_removed_while_being_labelled_is_fetched_again(
    tmp_path: Path,
) -> None:
    store = _CollectedWhileLabelling(tmp_path / "store", fsync=False)
    data = os.urandom(100)
    store.collect_on_update = False
    ingest_once(store, BytesSource(data), _request(data))
    store.collect_on_update = True
    source = BytesSource(data)
    labelled = IngestRequest(
        {"type": "memory"}, "another-ref", Digest.from_bytes(data), 100, labels={"new": "1"}
    )
    result = ingest_once(store, source, labelled)
    assert result.fetched and len(source.opened) == 1
    assert store.info(Digest.from_bytes(data)).labels == {"new": "1"}


def test_a_committed_digest_with_another_size_is_failed_precondition_like_commit(
    store: LocalStore,
) -> None:
    data = os.urandom(1000)
    ingest_once(store, BytesSource(data), _request(data))
    source, hooks = BytesSource(data), Recorder()
    wrong = IngestRequest({"type": "memory"}, "another-ref", Digest.from_bytes(data), 999)
    with pytest.raises(errdefs.FailedPrecondition, match='"another-ref" failed size validation: '
                       "1000 != 999"):  # fmt: skip
        ingest_once(store, source, wrong, hooks=hooks)
    assert source.opened == [] and hooks.names() == ["failed"]
    assert store.info(Digest.from_bytes(data)).size == 1000  # the blob is untouched


def test_a_damaged_committed_blob_of_another_size_is_fetched_again(store: LocalStore) -> None:
    data = os.urandom(1000)
    req = _request(data)
    ingest_once(store, BytesSource(data), req)
    assert req.digest is not None
    blob = store.blob_path(req.digest)
    blob.chmod(0o644)
    blob.write_bytes(data[:500])  # damaged on disk: shorter than the request's size
    source = BytesSource(data)
    result = ingest_once(store, source, req)
    assert result.fetched and source.opened == [0]
    assert store.reader_at(req.digest).read_at(0, 1000) == data


def test_a_resume_reports_resumed_and_counts_from_the_stored_offset(store: LocalStore) -> None:
    data = os.urandom(2 * MiB)
    req = _request(data)
    with store.writer(req.ref, req.expected) as w:
        w.write(data[:MiB])
    source, hooks = BytesSource(data), Recorder()
    result = ingest_once(store, source, req, hooks=hooks)
    assert source.opened == [MiB]
    assert result.resumed_from == MiB and result.bytes_fetched == MiB
    assert hooks.names() == ["started", "resumed", "progress", "progress", "done"]
    assert hooks.events[1] == ("resumed", MiB)
    assert hooks.events[2] == ("progress", MiB, 2 * MiB)


def test_a_source_that_cannot_resume_restarts_without_a_resumed_event(store: LocalStore) -> None:
    data = os.urandom(MiB + 10)
    req = _request(data)
    with store.writer(req.ref, req.expected) as w:
        w.write(data[:100])
    hooks = Recorder()
    result = ingest_once(store, BytesSource(data, resumable=False), req, hooks=hooks)
    assert result.bytes_fetched == len(data)
    assert "resumed" not in hooks.names()
    assert hooks.events[1] == ("progress", 0, len(data))


def test_a_digest_mismatch_fails_and_drops_the_content(store: LocalStore) -> None:
    data = os.urandom(1000)
    req = IngestRequest({"type": "memory"}, "ref-x", Digest.from_bytes(b"other"), 1000)
    hooks = Recorder()
    with pytest.raises(errdefs.FailedPrecondition, match="unexpected commit digest") as caught:
        ingest_once(store, BytesSource(data), req, hooks=hooks)
    assert hooks.events[-1] == ("failed", caught.value)
    assert "done" not in hooks.names()
    with pytest.raises(errdefs.NotFound):
        store.status(req.ref)  # emptied, then removed: nothing to resume
    assert list(store.walk()) == []


def test_a_lost_lock_turns_a_content_failure_into_a_retry_and_keeps_the_file(
    store: LocalStore,
) -> None:
    data = os.urandom(1000)
    req = IngestRequest({"type": "memory"}, "ref-x", Digest.from_bytes(b"other"), 1000)
    hooks = Recorder(lost=True)
    with pytest.raises(errdefs.Unavailable, match="lease lost, will retry") as caught:
        ingest_once(store, BytesSource(data), req, hooks=hooks)
    assert caught.value.details["reason"] == "lease-lost"
    assert hooks.events[-1] == ("failed", caught.value)
    assert store.status(req.ref).offset == 1000  # left alone for whoever holds it now


def test_a_short_body_is_data_loss_and_keeps_the_prefix(store: LocalStore) -> None:
    data = os.urandom(3000)
    req = _request(data)
    with pytest.raises(errdefs.DataLoss, match="ended at 2000 of 3000"):
        ingest_once(store, BytesSource(data[:2000], announce=None), req)
    assert store.status(req.ref).offset == 2000
    result = ingest_once(store, BytesSource(data), req)
    assert result.resumed_from == 2000 and result.bytes_fetched == 1000


def test_a_resume_never_commits_fewer_bytes_than_the_source_first_announced(
    store: LocalStore,
) -> None:
    data = os.urandom(3000)
    req = _request(data, digest=False, size=False)
    with pytest.raises(errdefs.DataLoss, match="ended at 2000 of 3000"):
        ingest_once(store, BytesSource(data[:2000], announce=3000), req)
    assert store.status(req.ref).offset == 2000
    # The source now says it holds only what was stored ("nothing left").
    with pytest.raises(errdefs.DataLoss, match="has 2000 bytes, 3000 announced"):
        ingest_once(store, BytesSource(data[:2000]), req)
    assert list(store.walk()) == [] and store.status(req.ref).offset == 2000
    result = ingest_once(store, BytesSource(data, announce=None), req)
    assert result.resumed_from == 2000 and result.info.size == 3000
    assert result.info.digest == Digest.from_bytes(data)


def test_a_longer_body_or_announced_size_is_failed_precondition(store: LocalStore) -> None:
    data = os.urandom(3000)
    req = _request(data[:2000])
    with pytest.raises(errdefs.FailedPrecondition, match="has 3000 bytes, expected 2000"):
        ingest_once(store, BytesSource(data), req)
    with pytest.raises(errdefs.FailedPrecondition, match="longer than the expected 2000"):
        ingest_once(store, BytesSource(data, announce=None), req)
    with pytest.raises(errdefs.DataLoss, match="has 1000 bytes, expected 2000"):
        ingest_once(store, BytesSource(data[:1000]), req)


def test_cancelled_stops_at_the_next_chunk_and_keeps_the_ingest(store: LocalStore) -> None:
    data = os.urandom(3 * MiB)
    req = _request(data)
    hooks = Recorder(cancel_at=CHUNK)
    with pytest.raises(errdefs.Canceled, match=f"canceled at offset {CHUNK}"):
        ingest_once(store, BytesSource(data), req, hooks=hooks)
    assert hooks.names()[-1] == "failed"
    assert store.status(req.ref).offset == CHUNK


def test_a_locked_ref_is_ref_busy_naming_the_holder_and_reports_nothing(
    store: LocalStore,
) -> None:
    data = os.urandom(10)
    req = _request(data)
    hooks = Recorder()
    with store.writer(req.ref, req.expected), pytest.raises(RefBusy) as caught:
        ingest_once(store, BytesSource(data), req, hooks=hooks)
    assert isinstance(caught.value.error, errdefs.Unavailable)
    assert "locked" in str(caught.value.error)
    assert caught.value.holder is not None and caught.value.holder.pid == os.getpid()
    assert hooks.events == []
