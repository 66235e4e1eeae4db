"""The Redis lease locker and the status board against a real redis-server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ingestq import errdefs
from ingestq.store.local import LocalStore
from ingestq.tasks import keys
from ingestq.tasks.lease import RedisLeaseLocker
from ingestq.tasks.statusboard import StatusBoard
from tests.servers.redis_server import RedisFactory, RedisServer, redis_with_socket
from tests.servers.util import wait_until


@pytest.fixture
def locker(redis_url: str) -> RedisLeaseLocker:
    return RedisLeaseLocker(redis_url, ttl=1.5)


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def test_acquire_is_exclusive_and_names_the_holder(locker: RedisLeaseLocker) -> None:
    lease = locker.try_lock("ref-a", "me")
    with pytest.raises(errdefs.Unavailable, match=r"ref ref-a locked for [0-9.]+s \(since"):
        locker.try_lock("ref-a", "someone-else")
    holder = locker.holder("ref-a")
    assert holder is not None
    assert (holder.id, holder.host, holder.pid) == ("me", socket.gethostname(), os.getpid())
    assert holder.fence == lease.fence
    lease.release()
    assert locker.holder("ref-a") is None


def test_fences_strictly_increase_across_grants(locker: RedisLeaseLocker) -> None:
    fences = []
    for _ in range(5):
        lease = locker.try_lock("ref-f", "me")
        fences.append(lease.fence)
        lease.release()
    assert fences == sorted(set(fences)) and len(fences) == 5


def test_the_heartbeat_keeps_the_lease_past_its_ttl(
    locker: RedisLeaseLocker, r: redis.Redis
) -> None:
    lease = locker.try_lock("ref-h", "me")
    first = locker.holder("ref-h")
    assert first is not None
    deadline = time.monotonic() + 3 * locker.ttl
    wait_until(lambda: time.monotonic() > deadline, 10, "three TTLs pass")
    lease.check()
    later = locker.holder("ref-h")
    assert later is not None and later.heartbeat_at > first.heartbeat_at
    assert r.pttl(keys.ref_keys("ref-h").lease) > 0
    lease.release()


def test_release_is_compare_and_delete(locker: RedisLeaseLocker, r: redis.Redis) -> None:
    lease = locker.try_lock("ref-c", "me")
    k = keys.ref_keys("ref-c")
    r.set(k.lease, "someone-elses-token")
    lease.release()
    assert r.get(k.lease) == b"someone-elses-token"


def test_a_stolen_lease_is_lost_and_check_raises(locker: RedisLeaseLocker, r: redis.Redis) -> None:
    lease = locker.try_lock("ref-s", "me")
    r.set(keys.ref_keys("ref-s").lease, "thief")
    wait_until(lambda: lease.lost, 10, "the heartbeat notices")
    with pytest.raises(errdefs.FailedPrecondition, match="lost"):
        lease.check()
    lease.release()
    assert r.get(keys.ref_keys("ref-s").lease) == b"thief"


def test_a_lease_without_renewal_counts_as_lost_by_the_local_clock(tmp_path: Path) -> None:
    # A Redis that stops answering: no renewal succeeds, so the holder gives up in time.
    from tests.servers.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis", appendonly=False)
    server.start()
    try:
        locker = RedisLeaseLocker(server.url, ttl=1.0)
        lease = locker.try_lock("ref-t", "me")
        server.stop(kill=True)
        wait_until(lambda: lease.lost, 5, "the lease expires locally")
        with pytest.raises(errdefs.FailedPrecondition):
            lease.check()
        lease.release()  # never raises, Redis is gone
    finally:
        server.close()


def test_the_store_writer_holds_file_lock_and_lease_and_publishes_status(
    locker: RedisLeaseLocker, redis_url: str, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store", lockers=[locker], fsync=False)
    board = StatusBoard(redis.Redis.from_url(redis_url), stale=3)
    w = store.writer("ref-w")
    lease = locker.held("ref-w")
    assert lease is not None
    lease.progress.publish = True
    lease.progress.offset, lease.progress.total, lease.progress.job_id = 5, 10, "job-1"
    w.write(b"hello")
    active = wait_until(board.list_active, 5, "status published")
    assert [(a.ref, a.offset, a.total, a.job_id, a.pid) for a in active] == [
        ("ref-w", 5, 10, "job-1", os.getpid())
    ]
    with pytest.raises(errdefs.Unavailable):
        store.writer("ref-w")
    w.close()
    assert board.list_active() == []
    assert locker.holder("ref-w") is None


def test_a_dead_writers_status_expires_by_itself(
    locker: RedisLeaseLocker, redis_url: str, r: redis.Redis
) -> None:
    board = StatusBoard(r, stale=1.0)
    lease = locker.try_lock("ref-d", "me")
    lease.progress.publish = True
    wait_until(board.list_active, 5, "status published")
    # Simulate death: the heartbeat stops without releasing.
    lease._released = True
    locker._forget(lease)
    wait_until(lambda: board.list_active() == [], 10, "the entry goes stale")
    assert r.zcard(keys.ACTIVE) == 0  # swept from the index on read
    wait_until(lambda: r.exists(keys.ref_keys("ref-d").status) == 0, 10, "hash expires")


def _hold_in_a_child(redis_url: str, ref: str) -> subprocess.Popen[str]:
    """A process of this host that takes ``ref``'s 60 s lease and keeps it."""
    code = (
        "import sys, time\n"
        "from ingestq.tasks.lease import RedisLeaseLocker\n"
        f"lease = RedisLeaseLocker({redis_url!r}, ttl=60).try_lock({ref!r}, 'child')\n"
        "print(lease.fence, flush=True)\n"
        "time.sleep(600)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_a_lease_of_a_dead_process_of_this_host_is_taken_over_at_once(
    locker: RedisLeaseLocker, redis_url: str
) -> None:
    child = _hold_in_a_child(redis_url, "ref-dead")
    assert child.stdout is not None
    fence = int(child.stdout.readline())
    with pytest.raises(errdefs.Unavailable, match="locked"):
        locker.try_lock("ref-dead", "me")  # alive: no takeover
    child.send_signal(signal.SIGSTOP)
    with pytest.raises(errdefs.Unavailable, match="locked"):
        locker.try_lock("ref-dead", "me")  # stopped is not dead
    child.kill()
    child.wait(10)
    lease = locker.try_lock("ref-dead", "me")
    assert lease.fence > fence
    holder = locker.holder("ref-dead")
    assert holder is not None and holder.pid == os.getpid() and holder.fence == lease.fence
    lease.release()


def test_a_lease_of_another_node_is_never_taken_over(
    locker: RedisLeaseLocker, redis_url: str
) -> None:
    child = _hold_in_a_child(redis_url, "ref-far")
    assert child.stdout is not None
    child.stdout.readline()
    child.kill()
    child.wait(10)
    r = redis.Redis.from_url(redis_url)
    r.hset(keys.ref_keys("ref-far").holder, "node", "another-boot:1")
    with pytest.raises(errdefs.Unavailable, match="locked"):
        locker.try_lock("ref-far", "me")


def test_a_guarded_acquire_reads_the_guard_field_in_the_same_script(
    locker: RedisLeaseLocker, r: redis.Redis
) -> None:
    r.hset("guard-hash", "other", "1")
    with locker.guarded("guard-hash", "cancel", lambda: errdefs.Canceled("no")) as guard:
        assert not guard.checked
        lease = locker.try_lock("ref-g", "me")
        assert guard.checked
    lease.release()
    r.hset("guard-hash", "cancel", "1")
    with (
        locker.guarded("guard-hash", "cancel", lambda: errdefs.Canceled("job x canceled")),
        pytest.raises(errdefs.Canceled, match="job x canceled"),
    ):
        locker.try_lock("ref-g", "me")
    assert locker.holder("ref-g") is None and r.get(keys.ref_keys("ref-g").lease) is None
    lease = locker.try_lock("ref-g", "me")  # outside the block: no guard
    lease.release()


def test_the_redis_lease_names_its_redis_without_credentials() -> None:
    with_password = RedisLeaseLocker("redis://user:s3cret@cache.example:6390/2")
    assert with_password.url_domain == "redis://cache.example:6390/2"
    assert RedisLeaseLocker("redis://cache.example").url_domain == "redis://cache.example:6379/0"
    assert "s3cret" not in with_password.url_domain
    host = socket.gethostname()
    sock = RedisLeaseLocker("unix://:s3cret@/run/my%20redis.sock?db=2")
    assert sock.url_domain == f"unix://{host}/run/my redis.sock/2"
    assert (
        RedisLeaseLocker("unix:///run/r.sock").url_domain
        != RedisLeaseLocker("unix:///run/r.sock?db=1").url_domain
    )


@pytest.fixture
def socket_redis(redis_factory: RedisFactory) -> Iterator[tuple[RedisServer, Path]]:
    """A Redis listening on TCP and on a unix socket."""
    with redis_with_socket(redis_factory) as server_and_socket:
        yield server_and_socket


def test_one_redis_database_is_one_lock_domain_however_it_is_reached(
    socket_redis: tuple[RedisServer, Path], redis_factory: RedisFactory
) -> None:
    """By its socket and by TCP as 127.0.0.1 or localhost, one database's lockers name
    one domain (their URL names differ), and they exclude each other; another database
    or server shares nothing."""
    server, sock = socket_redis
    by_tcp = RedisLeaseLocker(f"redis://127.0.0.1:{server.port}/3", ttl=5)
    by_name = RedisLeaseLocker(f"redis://localhost:{server.port}/3", ttl=5)
    by_socket = RedisLeaseLocker(f"unix://{sock}?db=3", ttl=5)
    assert len({by_tcp.url_domain, by_name.url_domain, by_socket.url_domain}) == 3
    (domain,) = by_tcp.domains
    assert domain.startswith("redis-db:")
    assert by_name.domains == by_socket.domains == {domain}
    lease = by_socket.try_lock("ref-domain", "a")
    with pytest.raises(errdefs.Unavailable, match="locked"):
        by_tcp.try_lock("ref-domain", "b")
    lease.release()

    assert not RedisLeaseLocker(f"unix://{sock}?db=4").domains & {domain}
    assert not RedisLeaseLocker(redis_factory().url).domains & {domain}


def test_a_copy_of_the_data_or_a_restart_is_another_domain(
    redis_server: RedisServer, redis_factory: RedisFactory
) -> None:
    """The database id is data: a server holding a copy of it (restored, a replica
    promoted) would share it, so the server's run id is part of the name and the copy's
    locks, which exclude nothing here, name another domain. A restart (same data) is
    another domain too: a gc then refuses until the jobs from before it end."""
    locker = RedisLeaseLocker(redis_server.url)
    (before,) = locker.domains
    db_id = redis.Redis.from_url(redis_server.url).get(keys.DATABASE_ID)
    assert db_id is not None and db_id.decode() in before

    copy = redis_factory()
    redis.Redis.from_url(copy.url).set(keys.DATABASE_ID, db_id)
    (copied,) = RedisLeaseLocker(copy.url).domains
    assert copied.split("/")[0] == before.split("/")[0] and copied != before
    other_db = redis_server.url.rsplit("/", 1)[0] + "/5"  # a copy in another database
    redis.Redis.from_url(other_db).set(keys.DATABASE_ID, db_id)
    (in_db5,) = RedisLeaseLocker(other_db).domains
    assert in_db5.split("/")[:2] == before.split("/")[:2] and in_db5 != before

    redis_server.stop()
    with pytest.raises(errdefs.Unavailable, match="database id"):
        _ = RedisLeaseLocker(redis_server.url).domains
    redis_server.start()
    (after,) = RedisLeaseLocker(redis_server.url).domains
    assert after.split("/")[0] == before.split("/")[0], "the id outlives a restart"
    assert after != before


def test_one_url_for_two_servers_is_two_domains(redis_factory: RedisFactory) -> None:
    """``redis://127.0.0.1:PORT/0`` names whichever server listens there: the domain
    does not come from the URL."""
    first = redis_factory()
    url = first.url
    (one,) = RedisLeaseLocker(url).domains
    first.stop()
    second = redis_factory(port=first.port)
    assert second.url == url
    (two,) = RedisLeaseLocker(url).domains
    assert one != two


def test_a_redis_that_refuses_info_gives_a_domain_nobody_shares(redis_server: RedisServer) -> None:
    """A user whose ACL denies INFO: the server cannot be told apart from a copy, so
    the locker names a domain of its own (a gc with it refuses what others lock)."""
    admin = redis.Redis.from_url(redis_server.url)
    admin.acl_setuser("noinfo", enabled=True, passwords=["+pw"], keys=["*"],
                      commands=["+@all", "-info"], channels=["*"])  # fmt: skip
    url = redis_server.url.replace("redis://", "redis://noinfo:pw@", 1)
    limited = RedisLeaseLocker(url)
    (mine,) = limited.domains
    assert mine.startswith("object://")
    assert not limited.domains & RedisLeaseLocker(redis_server.url).domains
    lease = limited.try_lock("ref-noinfo", "me")  # its leases work as ever
    lease.release()
