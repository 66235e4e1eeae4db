"""Combining ingest hook subscribers: every event reaches each subscriber in order;
cancelled / lock lost when any says so; nested combinations flatten."""

from __future__ import annotations

from ingestq import errdefs
from ingestq.ingest.hooks import NO_HOOKS, CombinedHooks, Hooks, combine
from ingestq.ingest.outcome import IngestResult, RefBusy
from ingestq.ingest.request import IngestRequest
from ingestq.store.digest import Digest
from ingestq.store.values import Info, utcnow
from tests.ingest.helpers import Recorder


def test_combine_of_none_or_one_is_no_hooks_or_that_one() -> None:
    one = Recorder()
    assert combine() is NO_HOOKS
    assert combine(NO_HOOKS) is NO_HOOKS
    assert combine(one) is one
    assert combine(NO_HOOKS, one) is one


def test_every_event_reaches_every_subscriber_in_order() -> None:
    a, b = Recorder(), Recorder()
    both = combine(a, b)
    request = IngestRequest({"type": "memory"}, "ref-1")
    busy = RefBusy(errdefs.Unavailable("ref ref-1 locked"), None)
    now = utcnow()
    result = IngestResult(Info(Digest.from_bytes(b"x"), 1, now, now), True, 1)
    error = errdefs.DataLoss("short")
    both.started(request, "src")
    both.resumed(5)
    both.progress(6, 10)
    both.lock_wait(busy, 0.5)
    both.done(result)
    both.failed(error)
    expected = [
        ("started", "ref-1", "src"),
        ("resumed", 5),
        ("progress", 6, 10),
        ("lock_wait", busy, 0.5),
        ("done", result),
        ("failed", error),
    ]
    assert a.events == expected and b.events == expected


def test_cancelled_or_lock_lost_when_any_subscriber_says_so() -> None:
    quiet = Hooks()
    assert not combine(quiet, Recorder()).cancelled()
    assert combine(quiet, Recorder(cancel_at=0)).cancelled()
    assert not combine(quiet, Recorder()).lock_lost()
    assert combine(Recorder(lost=True), quiet).lock_lost()


def test_nested_combinations_flatten() -> None:
    a, b, c = Recorder(), Recorder(), Recorder()
    nested = combine(combine(a, b), c)
    assert isinstance(nested, CombinedHooks)
    assert nested.subscribers == (a, b, c)
