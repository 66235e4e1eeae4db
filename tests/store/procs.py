"""Child-process entry points for the real-process store tests (spawned, so they must be
importable top-level functions). Children report through queues and pipes; every wait
has a timeout so a broken child fails the test instead of hanging it."""

from __future__ import annotations

import io
import os
import random
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from typing import Any

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, LocalStore, copy, open_writer

WAIT = 60.0


def content(size: int, seed: int) -> bytes:
    """The deterministic content the tests write."""
    return random.Random(seed).randbytes(size)


def race_for_ref(
    root: str, ref: str, size: int, seed: int, start: Barrier, go: Event, out: Queue[Any]
) -> None:
    """Race for ``ref``. The winner reports ``won``, waits for ``go`` (all losers have
    reported), writes and commits. A loser reports the Unavailable message, then waits
    with open_writer until it gets AlreadyExists."""
    data = content(size, seed)
    desc = Descriptor(Digest.from_bytes(data), size)
    store = LocalStore(root)
    start.wait(WAIT)
    try:
        w = store.writer(ref, desc)
    except errdefs.Unavailable as e:
        out.put(("unavailable", os.getpid(), str(e)))
        waits = 0

        def count(_: errdefs.Unavailable) -> None:
            nonlocal waits
            waits += 1

        try:
            open_writer(store, ref, desc, timeout=WAIT, on_wait=count).close()
            out.put(("opened", os.getpid(), ""))
        except errdefs.AlreadyExists as e:
            out.put(("already_exists", os.getpid(), f"{waits} {e}"))
        return
    out.put(("won", os.getpid(), ""))
    if not go.wait(WAIT):
        out.put(("timeout", os.getpid(), ""))
        w.close()
        return
    with w:
        for i in range(0, size, 65536):
            w.write(data[i : i + 65536])
        info = w.commit(size, desc.digest)
    out.put(("committed", os.getpid(), str(info.digest)))


def write_until_killed(root: str, ref: str, size: int, seed: int, conn: Connection) -> None:
    """Write ``ref`` in 64 KiB chunks, sending the offset after each, then wait (without
    committing) for a kill that the parent sends once it has seen enough progress."""
    data = content(size, seed)
    store = LocalStore(root)
    w = store.writer(ref, Descriptor(Digest.from_bytes(data), size))
    conn.send(("holder", os.getpid(), w.status().holder))
    for i in range(0, size - 65536, 65536):
        w.write(data[i : i + 65536])
        conn.send(("offset", i + 65536))
    conn.send(("done", size - 65536))
    conn.recv()  # never answered: the parent kills us


def resume_and_commit(root: str, ref: str, size: int, seed: int, out: Queue[Any]) -> None:
    """Open ``ref`` on the first try (the lock must be free), report the resume offset,
    copy the rest from a seekable source and commit."""
    data = content(size, seed)
    store = LocalStore(root)
    try:
        w = store.writer(ref, Descriptor(Digest.from_bytes(data), size))
    except errdefs.ErrdefsError as e:
        out.put(("error", type(e).__name__, str(e)))
        return
    with w:
        offset = w.status().offset
        resumed_digest = w.digest()
        info = copy(w, io.BytesIO(data), size, Digest.from_bytes(data))
    assert info is not None
    out.put(("committed", offset, str(resumed_digest), str(info.digest)))


def step_writer(root: str, ref: str, steps: int, chunk: int, conn: Connection) -> None:
    """Write ``steps`` chunks, one per ``next`` from the parent, reporting each offset;
    commit on ``commit``."""
    store = LocalStore(root)
    data = content(steps * chunk, 99)
    with store.writer(ref, Descriptor(Digest.from_bytes(data), len(data))) as w:
        conn.send(("ready", os.getpid()))
        for i in range(steps):
            assert conn.recv() == "next"
            w.write(data[i * chunk : (i + 1) * chunk])
            conn.send(("wrote", w.status().offset))
        assert conn.recv() == "commit"
        info = w.commit(len(data), Digest.from_bytes(data))
    conn.send(("committed", str(info.digest)))


def watch_status(root: str, ref: str, conn: Connection) -> None:
    """On each ``look``, report what Status and ListStatuses say about ``ref``."""
    store = LocalStore(root)
    while True:
        msg = conn.recv()
        if msg == "stop":
            return
        try:
            st = store.status(ref)
        except errdefs.NotFound:
            conn.send(("not_found",))
            continue
        listed = [s.ref for s in store.list_statuses(f"ref=={ref}")]
        holder = st.holder
        conn.send(("status", st.offset, st.total, holder.pid if holder else None, listed))


def poll_status(root: str, ref: str, stop: Event, started: Event, out: Queue[Any]) -> None:
    """Read ``ref``'s Status in a tight loop until ``stop``; report how many reads."""
    store = LocalStore(root)
    polls = 0
    started.set()
    while not stop.is_set():
        store.status(ref)
        store.list_statuses()
        polls += 1
    out.put(polls)


def hold_ref(root: str, ref: str, locked: Event, release: Event) -> None:
    """Hold ``ref``'s writer until ``release``."""
    store = LocalStore(root)
    with store.writer(ref):
        locked.set()
        release.wait(WAIT)


def put_images(root: str, prefix: str, count: int, start: Barrier) -> None:
    """Record ``count`` images in the layout's index.json."""
    from ingestq.store import ImageIndex

    index = ImageIndex(root)
    start.wait(WAIT)
    for i in range(count):
        d = Digest.from_bytes(f"{prefix}-{i}".encode())
        index.put(f"{prefix}:{i}", Descriptor(d, i + 1))


def put_until_killed(root: str, seed: int, unnamed: bool, conn: Connection) -> None:
    """Put distinct 4 KiB blobs (every third with a label) back to back, sending each
    committed digest, until the parent kills us (the pipe is never read from)."""
    store = LocalStore(root)
    store.blobs.temp.unnamed = store.blobs.temp.unnamed and unnamed
    conn.send(("ready", os.getpid()))
    for i in range(1_000_000):
        data = content(4096, seed * 1_000_000 + i)
        desc = Descriptor(Digest.from_bytes(data), len(data))
        labels = {"n": str(i)} if i % 3 == 0 else None
        store.put(f"small-{i}", desc, data, labels)
        conn.send(("put", str(desc.digest)))


def race_puts(root: str, count: int, start: Barrier, out: Queue[Any]) -> None:
    """Put the same ``count`` blobs as the other racers, each after the barrier; report
    per digest whether this process committed it or found it already there."""
    store = LocalStore(root)
    start.wait(WAIT)
    results = []
    for i in range(count):
        data = content(4096, 7000 + i)
        desc = Descriptor(Digest.from_bytes(data), len(data))
        try:
            store.put(f"race-{i}", desc, data)
            results.append((str(desc.digest), "committed"))
        except errdefs.AlreadyExists:
            results.append((str(desc.digest), "already_exists"))
    out.put((os.getpid(), results))
