"""The one retry policy (jobs/retry.py): which errors are retried, how long each wait
is (backoff, jitter, cap, Retry-After), how many attempts, and the in-process loop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestq import errdefs
from ingestq.jobs.config import Settings
from ingestq.jobs.retry import RetryPolicy, retry_after


def test_only_unavailable_is_transient() -> None:
    assert RetryPolicy.transient(errdefs.Unavailable("registry 503"))
    for kind in errdefs.KINDS.values():
        if kind is not errdefs.Unavailable:
            assert not RetryPolicy.transient(kind("x")), kind
    assert not RetryPolicy.transient(ValueError("x"))
    assert RetryPolicy().delay(0, errdefs.NotFound("x")) is None


def test_backoff_doubles_from_first_to_cap_without_jitter() -> None:
    policy = RetryPolicy(first=0.1, cap=1.0, jitter=0.0, max_attempts=None)
    assert [policy.backoff(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert policy.backoff(10_000) == 1.0


@given(retry=st.integers(min_value=0, max_value=200))
def test_jittered_delays_stay_in_the_upper_half_of_the_bound(retry: int) -> None:
    policy = RetryPolicy(first=1.0, cap=300.0)
    bound = min(300.0, 2.0**retry)
    assert bound / 2 <= policy.backoff(retry) <= bound


def test_max_attempts_counts_the_first_attempt() -> None:
    policy = RetryPolicy(first=0.01, cap=0.01, max_attempts=3)
    err = errdefs.Unavailable("down")
    assert policy.delay(0, err) is not None
    assert policy.delay(1, err) is not None
    assert policy.delay(2, err) is None
    assert RetryPolicy(max_attempts=1).delay(0, err) is None
    assert RetryPolicy(max_attempts=None).delay(10**6, err) is not None


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(first=0.1, cap=30.0, jitter=0.0)
    assert policy.delay(0, errdefs.Unavailable("429", {"retry_after": "7"})) == 7.0
    assert policy.delay(0, errdefs.Unavailable("429", {"retry_after": "3600"})) == 30.0
    # A Retry-After shorter than the backoff does not shorten it.
    assert policy.delay(4, errdefs.Unavailable("429", {"retry_after": "0.5"})) == 1.6
    assert policy.delay(0, errdefs.Unavailable("429", {"retry_after": "soon"})) == 0.1


def test_retry_after_parses_only_non_negative_numbers() -> None:
    assert retry_after(errdefs.Unavailable("x", {"retry_after": "2.5"})) == 2.5
    for bad in ("-1", "nan", "inf", "", "later"):
        assert retry_after(errdefs.Unavailable("x", {"retry_after": bad})) is None
    assert retry_after(errdefs.Unavailable("x")) is None
    assert retry_after(ValueError("x")) is None


@pytest.mark.parametrize(
    "kwargs",
    [{"first": 0}, {"cap": -1}, {"jitter": 1.5}, {"multiplier": 0.5}, {"max_attempts": 0}],
)
def test_values_out_of_range_are_invalid(kwargs: dict[str, float]) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_settings_give_the_source_and_lock_wait_policies() -> None:
    s = Settings.from_env({"INGESTQ_MAX_SOURCE_RETRIES": "2", "INGESTQ_RETRY_CAP": "9"})
    assert s.source_retry == RetryPolicy(first=1.0, cap=9.0, max_attempts=3)
    assert Settings.from_env({"INGESTQ_MAX_SOURCE_RETRIES": "0"}).source_retry.max_attempts == 1
    assert s.lock_wait_retry == RetryPolicy(first=0.1, cap=5.0, max_attempts=None)


def test_run_retries_transient_errors_then_returns() -> None:
    policy = RetryPolicy(first=0.5, cap=2.0, jitter=0.0, max_attempts=5)
    outcomes: list[Exception | str] = [
        errdefs.Unavailable("503"),
        errdefs.Unavailable("429", {"retry_after": "1.5"}),
        "done",
    ]
    waits: list[float] = []
    told: list[tuple[str, float]] = []

    def attempt() -> str:
        out = outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        return out

    result = policy.run(
        attempt,
        wait=lambda s: waits.append(s) is not None,
        what="job j",
        on_retry=lambda e, d: told.append((e.message, d)),
    )
    assert result == "done"
    assert waits == [0.5, 1.5]
    assert told == [("503", 0.5), ("429", 1.5)]


def test_run_raises_permanent_errors_and_the_last_transient_one() -> None:
    policy = RetryPolicy(first=0.01, cap=0.01, max_attempts=3)
    calls = 0

    def not_found() -> None:
        nonlocal calls
        calls += 1
        raise errdefs.NotFound("gone")

    with pytest.raises(errdefs.NotFound):
        policy.run(not_found, wait=lambda s: False, what="job j")
    assert calls == 1

    def down() -> None:
        nonlocal calls
        calls += 1
        raise errdefs.Unavailable(f"down {calls}")

    calls = 0
    with pytest.raises(errdefs.Unavailable, match="down 3"):
        policy.run(down, wait=lambda s: False, what="job j")
    assert calls == 3


def test_run_stops_with_canceled_when_the_wait_is_interrupted() -> None:
    policy = RetryPolicy(first=0.01, cap=0.01, max_attempts=None)

    def down() -> None:
        raise errdefs.Unavailable("down")

    with pytest.raises(errdefs.Canceled, match="job j canceled") as caught:
        policy.run(down, wait=lambda s: True, what="job j")
    assert isinstance(caught.value.__cause__, errdefs.Unavailable)
