"""The in-process ingest (:func:`ingest`): waits while the ref is locked, reporting
every wait, and ends with exactly one ``done`` or ``failed``."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.ingest.outcome import RefBusy
from ingestq.ingest.request import make_request
from ingestq.ingest.wait import ingest
from ingestq.store.digest import Digest
from ingestq.store.helpers import Backoff
from ingestq.store.local import LocalStore
from tests.ingest.helpers import BytesSource, Recorder


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store", fsync=False)


def test_a_locked_ref_is_waited_for_then_found_committed(store: LocalStore) -> None:
    data = os.urandom(500)
    req = make_request({"type": "memory"}, "memory:test", digest=Digest.from_bytes(data), size=500)
    holder = store.writer(req.ref, req.expected)
    holder.write(data)
    waits: list[tuple[RefBusy, float]] = []
    slept: list[float] = []

    def sleep(delay: float) -> None:
        slept.append(delay)
        if len(slept) == 2:
            holder.commit(500, req.digest)  # the other writer finishes

    hooks, source = Recorder(), BytesSource(data)
    result = ingest(
        store, source, req, hooks=hooks, sleep=sleep,
        backoff=Backoff(0.05, 2.0, rng=random.Random(1)),
        on_wait=lambda busy, delay: waits.append((busy, delay)),
    )  # fmt: skip
    assert not result.fetched and source.opened == []
    assert hooks.names() == ["lock_wait", "lock_wait", "done"]
    assert [(e[1], e[2]) for e in hooks.events[:2]] == waits
    assert [d for _, d in waits] == slept
    assert "locked" in str(waits[0][0].error)


def test_waiting_past_the_timeout_raises_the_lock_error_as_failed(store: LocalStore) -> None:
    data = os.urandom(10)
    req = make_request({"type": "memory"}, "memory:test", digest=Digest.from_bytes(data), size=10)
    hooks = Recorder()
    with store.writer(req.ref, req.expected), pytest.raises(errdefs.Unavailable) as caught:
        ingest(store, BytesSource(data), req, hooks=hooks, timeout=0)
    assert hooks.events == [("failed", caught.value)]


def test_cancelled_while_waiting_is_canceled_as_failed(store: LocalStore) -> None:
    data = os.urandom(10)
    req = make_request({"type": "memory"}, "memory:test", digest=Digest.from_bytes(data), size=10)
    hooks = Recorder(cancel_at=0)
    with pytest.raises(errdefs.Canceled, match="canceled while waiting") as caught:
        ingest(store, BytesSource(data), req, hooks=hooks)
    assert hooks.events == [("failed", caught.value)]
