"""CancelHooks: the cancel flag is read at most once a poll, counting reads made by
other means (a lease's acquire script, a batch's read of all its jobs' flags)."""

from __future__ import annotations

import time

from ingestq.jobs.cancel import CancelHooks


class _Flags:
    """A cancel-flag store that counts its reads."""

    def __init__(self) -> None:
        self.set: set[str] = set()
        self.reads = 0

    def request_cancel(self, job_id: str) -> None:
        self.set.add(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        self.reads += 1
        return job_id in self.set


def test_a_read_elsewhere_counts_for_a_poll_from_when_it_was_made() -> None:
    flags = _Flags()
    hooks = CancelHooks(flags, "j", poll=30.0)
    hooks.read_elsewhere()
    flags.request_cancel("j")
    assert not hooks.cancelled() and flags.reads == 0  # the read just made still counts


def test_a_read_made_a_poll_ago_counts_no_more() -> None:
    flags = _Flags()
    hooks = CancelHooks(flags, "j", poll=30.0)
    hooks.read_elsewhere(at=time.monotonic() - 31.0)  # a batch read its flags long ago
    flags.request_cancel("j")
    assert hooks.cancelled() and flags.reads == 1
    assert hooks.cancelled() and flags.reads == 1  # once seen, it stays


def test_the_first_check_reads_the_flag() -> None:
    flags = _Flags()
    hooks = CancelHooks(flags, "j", poll=30.0)
    assert not hooks.cancelled() and flags.reads == 1
    flags.request_cancel("j")
    assert not hooks.cancelled() and flags.reads == 1  # within the poll: not read again
