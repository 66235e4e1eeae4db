"""Cross-process ingest without a daemon, with real (spawned) processes: racing for one
ref, SIGKILL mid-write then resume, and watching Status from another process.

Processes synchronise through barriers, events, pipes and queues; nothing waits on a
sleep. Every blocking call has a timeout so a broken child fails rather than hangs."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from ingestq import errdefs
from ingestq.store import Digest, LocalStore, read_blob
from tests.store import procs

CTX = mp.get_context("spawn")
WAIT = 60.0


def _join(*ps: Any) -> None:
    for p in ps:
        p.join(WAIT)
        assert p.exitcode is not None, f"{p.name} did not exit"


def test_racing_processes_one_writes_the_others_wait_for_it(tmp_path: Path) -> None:
    n, size, seed, ref = 5, 1 << 20, 7, "layer-sha256:race"
    root = str(tmp_path / "store")
    LocalStore(root)
    start, go, out = CTX.Barrier(n), CTX.Event(), CTX.Queue()
    ps = [
        CTX.Process(target=procs.race_for_ref, args=(root, ref, size, seed, start, go, out))
        for _ in range(n)
    ]
    for p in ps:
        p.start()
    first = [out.get(timeout=WAIT) for _ in range(n)]
    kinds = sorted(k for k, _, _ in first)
    assert kinds == ["unavailable"] * (n - 1) + ["won"]
    winner = next(pid for k, pid, _ in first if k == "won")
    for kind, _, msg in first:
        if kind == "unavailable":
            assert msg.startswith(f"ref {ref} locked for ")
            assert "s (since " in msg
            assert msg.endswith(": unavailable")
    go.set()
    rest = [out.get(timeout=WAIT) for _ in range(n)]
    _join(*ps)
    assert [p.exitcode for p in ps] == [0] * n
    by_kind: dict[str, list[tuple[int, str]]] = {}
    for kind, pid, msg in rest:
        by_kind.setdefault(kind, []).append((pid, msg))
    data = procs.content(size, seed)
    assert by_kind["committed"] == [(winner, str(Digest.from_bytes(data)))]
    assert len(by_kind["already_exists"]) == n - 1
    assert "opened" not in by_kind
    assert all(
        msg.split(" ", 1)[1].endswith("already exists") for _, msg in by_kind["already_exists"]
    )
    assert read_blob(LocalStore(root), Digest.from_bytes(data)) == data
    assert LocalStore(root).list_statuses() == []


def test_sigkill_mid_write_then_resume_in_a_new_process(tmp_path: Path) -> None:
    size, seed, ref = 8 << 20, 11, "layer-sha256:killed"
    root = str(tmp_path / "store")
    observer = LocalStore(root)
    parent_end, child_end = CTX.Pipe()
    p = CTX.Process(target=procs.write_until_killed, args=(root, ref, size, seed, child_end))
    p.start()
    assert parent_end.poll(WAIT)
    kind, pid, holder = parent_end.recv()
    assert (kind, pid) == ("holder", p.pid)
    assert holder.pid == p.pid
    seen = 0
    while seen < 2 << 20:  # let it get well into the write, then kill it mid-stream
        assert parent_end.poll(WAIT)
        msg = parent_end.recv()
        seen = msg[1]
    st = observer.status(ref)
    assert st.holder is not None and st.holder.pid == p.pid
    os.kill(p.pid, signal.SIGKILL)
    _join(p)
    assert p.exitcode == -signal.SIGKILL

    # The kernel released the lock with the process: free at once, no waiting.
    st = observer.status(ref)
    assert st.holder is None
    stored = st.offset
    assert stored >= seen
    out = CTX.Queue()
    r = CTX.Process(target=procs.resume_and_commit, args=(root, ref, size, seed, out))
    r.start()
    result = out.get(timeout=WAIT)
    _join(r)
    data = procs.content(size, seed)
    assert result == (
        "committed",
        stored,
        str(Digest.from_bytes(data[:stored])),
        str(Digest.from_bytes(data)),
    )
    assert read_blob(observer, Digest.from_bytes(data)) == data
    assert observer.list_statuses() == []


def test_lock_is_free_at_once_after_sigkill(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    store = LocalStore(root)
    locked, release = CTX.Event(), CTX.Event()
    p = CTX.Process(target=procs.hold_ref, args=(root, "held", locked, release))
    p.start()
    assert locked.wait(WAIT)
    with pytest.raises(errdefs.Unavailable):
        store.writer("held")
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    _join(p)
    store.writer("held").close()  # first try, no backoff


def test_another_process_watches_status_advance(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    ref, steps, chunk = "watched", 4, 100_000
    w_parent, w_child = CTX.Pipe()
    s_parent, s_child = CTX.Pipe()
    writer = CTX.Process(target=procs.step_writer, args=(root, ref, steps, chunk, w_child))
    watcher = CTX.Process(target=procs.watch_status, args=(root, ref, s_child))
    writer.start()
    watcher.start()

    def look() -> tuple[Any, ...]:
        s_parent.send("look")
        assert s_parent.poll(WAIT)
        return s_parent.recv()  # type: ignore[no-any-return]

    assert w_parent.poll(WAIT)
    assert w_parent.recv() == ("ready", writer.pid)
    assert look() == ("status", 0, steps * chunk, writer.pid, [ref])
    for i in range(1, steps + 1):
        w_parent.send("next")
        assert w_parent.poll(WAIT)
        assert w_parent.recv() == ("wrote", i * chunk)
        assert look() == ("status", i * chunk, steps * chunk, writer.pid, [ref])
    w_parent.send("commit")
    assert w_parent.poll(WAIT)
    assert w_parent.recv()[0] == "committed"
    assert look() == ("not_found",)
    s_parent.send("stop")
    _join(writer, watcher)
    assert (writer.exitcode, watcher.exitcode) == (0, 0)


def test_watching_status_never_makes_a_writer_fail(tmp_path: Path) -> None:
    """Reading who holds a ref must not take its lock, even for a moment."""
    root = str(tmp_path / "store")
    store = LocalStore(root, fsync=False)
    store.writer("polled").close()
    stop, started, out = CTX.Event(), CTX.Event(), CTX.Queue()
    pollers = [
        CTX.Process(target=procs.poll_status, args=(root, "polled", stop, started, out))
        for _ in range(2)
    ]
    for p in pollers:
        p.start()
    assert started.wait(WAIT)
    try:
        for _ in range(300):
            store.writer("polled").close()  # Unavailable here would fail the test
    finally:
        stop.set()
    polls = [out.get(timeout=WAIT) for _ in pollers]
    _join(*pollers)
    assert all(n > 0 for n in polls)
