"""The hashing queue behind the local writer: pieces reach their hasher in the order
queued, one at a time, on a real thread pool; a failure stops it and is raised to the
writer."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from ingestq.store.local.hashqueue import ForkedWhileHashing, HashFailed, HashQueue
from tests.servers.util import forked_exit_code


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


class _Recorder:
    """Records the pieces it is given; fails on the piece ``fail_on`` (bytes)."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.seen: list[bytes] = []
        self.fail_on = fail_on
        self.active = 0
        self.most_active = 0
        self._mutex = threading.Lock()

    def update(self, data: memoryview) -> None:
        with self._mutex:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            if bytes(data) == self.fail_on:
                raise MemoryError("no memory")
            self.seen.append(bytes(data))
        finally:
            with self._mutex:
                self.active -= 1


def test_pieces_are_hashed_in_order_one_at_a_time(pool: ThreadPoolExecutor) -> None:
    queue = HashQueue(lambda: pool, depth=3)
    pieces = [os.urandom(1 + i * 1000) for i in range(200)]
    recorder = _Recorder()
    real = hashlib.sha256()
    for piece in pieces:
        queue.put(recorder, memoryview(piece))  # type: ignore[arg-type]
        queue.put(real, memoryview(piece))
    queue.wait()
    assert recorder.seen == pieces
    assert recorder.most_active == 1
    assert real.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_a_failure_is_raised_and_stops_the_queue(pool: ThreadPoolExecutor) -> None:
    queue = HashQueue(lambda: pool, depth=2)
    recorder = _Recorder(fail_on=b"bad")
    for piece in (b"one", b"two", b"bad"):
        queue.put(recorder, memoryview(piece))  # type: ignore[arg-type]
    with pytest.raises(HashFailed) as failed:
        queue.wait()
    assert isinstance(failed.value.error, MemoryError)
    with pytest.raises(HashFailed):
        queue.put(recorder, memoryview(b"after"))  # type: ignore[arg-type]
    assert recorder.seen == [b"one", b"two"]


def test_wait_below_returns_once_fewer_pieces_wait(pool: ThreadPoolExecutor) -> None:
    gates = {piece: threading.Event() for piece in (b"a", b"b", b"c")}
    recorder = _Recorder()

    class Gated:
        def update(self, data: memoryview) -> None:
            gates[bytes(data)].wait(timeout=30)
            recorder.update(data)

    queue = HashQueue(lambda: pool, depth=4)
    for piece in gates:
        queue.put(Gated(), memoryview(piece), straight=True)  # type: ignore[arg-type]
    waiter = threading.Thread(target=queue.wait_below, args=(2,))
    waiter.start()
    gates[b"a"].set()
    queue.wait_below(3)  # "a" is hashed: two pieces still wait
    waiter.join(timeout=0.5)
    assert waiter.is_alive()  # two waiting is not fewer than two
    gates[b"b"].set()
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert recorder.seen == [b"a", b"b"]
    gates[b"c"].set()
    queue.wait_below(1)
    assert recorder.seen == [b"a", b"b", b"c"]


def test_wait_below_raises_an_earlier_failure(pool: ThreadPoolExecutor) -> None:
    queue = HashQueue(lambda: pool, depth=4)
    recorder = _Recorder(fail_on=b"bad")
    queue.put(recorder, memoryview(b"bad"))  # type: ignore[arg-type]
    with pytest.raises(HashFailed):
        queue.wait_below(1)


def test_a_child_forked_while_pieces_wait_fails_instead_of_hanging(
    pool: ThreadPoolExecutor,
) -> None:
    gate = threading.Event()

    class Gated:
        def update(self, data: memoryview) -> None:
            gate.wait(timeout=30)

    queue = HashQueue(lambda: pool, depth=4)
    queue.put(Gated(), memoryview(b"held"), straight=True)  # type: ignore[arg-type]
    pid = os.fork()
    if pid == 0:  # the child: no thread of the parent's pool is here
        code = 5
        try:
            queue.wait()
        except HashFailed as e:
            code = 3 if isinstance(e.error, ForkedWhileHashing) else 4
        os._exit(code)
    gate.set()
    queue.wait()  # the parent's own queue finishes as usual
    hung = "the forked child hung waiting for its hash queue"
    assert forked_exit_code(pid, 30, hung) == 3
