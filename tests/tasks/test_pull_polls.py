"""The pull finalize's poll schedule: quick while most pulls end, then slower."""

from __future__ import annotations

from ingestq.tasks.pull_task import (
    POLL_CAP,
    POLL_EAGER,
    POLL_FIRST,
    POLL_QUICK,
    POLL_QUICK_CAP,
    POLL_SLOW_CAP,
    poll_countdown,
)


def test_the_polls_start_quick_then_slow_down_in_steps() -> None:
    delays = [poll_countdown(i) for i in range(POLL_EAGER + 10)]
    assert delays[0] == POLL_FIRST
    assert max(delays[:POLL_QUICK]) == POLL_QUICK_CAP
    assert max(delays[POLL_QUICK:POLL_EAGER]) == POLL_CAP
    assert set(delays[POLL_EAGER:]) == {POLL_SLOW_CAP}
    assert delays == sorted(delays)
    # The quick phase covers the first seconds; the eager one about a minute.
    assert 3.0 <= sum(delays[:POLL_QUICK]) <= 10.0
    assert 30.0 <= sum(delays[:POLL_EAGER]) <= 90.0
