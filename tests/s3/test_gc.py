"""``ingestq gc`` and ``ingestq df`` on an S3 store: the mark from the bucket's
``index.json``, leases and the blobs' labels, the sweep of unreferenced blob and metadata
objects, of idle ingests and of stray multipart uploads; across hosts: a pull's lease
made on one host keeps its blobs from a gc on another, the sweep skips blobs whose lock
is held, and two runs on one bucket exclude each other (against SeaweedFS)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ingestq import errdefs
from ingestq.s3 import S3Location, S3Store
from ingestq.s3 import gc as s3gc
from ingestq.s3.bloblock import blob_lock_ref
from ingestq.s3.records import meta_to_bytes
from ingestq.store import Descriptor, Digest
from ingestq.store.codec import BlobMeta
from ingestq.store.gc import GC_ROOT_LABEL, GcOptions, GcReport, JobLease
from ingestq.store.leases import EXPIRE_LABEL
from ingestq.store.locks import ChainLocker, FileRefLocker, lock_domains, shared_domains
from ingestq.store.memory import MemoryLease
from ingestq.store.testing import FakeRefLocker
from ingestq.tasks.lease import RedisLeaseLocker
from ingestq.worker.cli import cli
from tests.servers.redis_server import RedisFactory, redis_with_socket
from tests.servers.seaweed import S3Endpoint

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def location(
    s3_endpoint: S3Endpoint, s3_bucket: str, s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> S3Location:
    for name, value in s3_endpoint.env().items():
        monkeypatch.setenv(name, value)
    location = S3Location(s3_bucket, s3_prefix)
    monkeypatch.setenv("INGESTQ_STORE", str(location))
    return location


def run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--root", str(root)])


def put(store: S3Store, data: bytes, labels: dict[str, str] | None = None) -> Digest:
    digest = Digest.from_bytes(data)
    with store.writer(f"put-{digest.encoded[:12]}", Descriptor(digest, len(data))) as w:
        w.write(data)
        w.commit(len(data), digest, labels)
    return digest


def keys(store: S3Store, under: str) -> set[str]:
    return {o.key for o in store.bucket.list_objects(store.location.key(under) + "/")}


def test_gc_removes_blobs_no_image_or_label_keeps(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    root = tmp_path / "host"
    store = S3Store(location, s3_endpoint.client(), root)
    config = put(store, b'{"architecture":"amd64","os":"linux"}')
    layer = put(store, os.urandom(70_000))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/json", "digest": str(config), "size": 37},
            "layers": [{"mediaType": "application/octet-stream", "digest": str(layer)}],
        }
    ).encode()
    root_digest = put(store, manifest)
    store.image_index().put("app:v1", Descriptor(root_digest, len(manifest), OCI_MANIFEST))
    pinned = put(store, b"pinned", {GC_ROOT_LABEL: "x"})
    garbage = put(store, os.urandom(50_000), {"a": "1"})
    assert len(keys(store, "meta")) == 2  # only labelled small blobs have a meta object

    dry = run(root, "gc", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert [b["digest"] for b in json.loads(dry.stdout)["blobs"]] == [str(garbage)]
    assert store.exists(garbage)

    df = run(root, "df", "--json")
    assert df.exit_code == 0, df.output
    use = json.loads(df.stdout)
    assert use["blobs"]["count"] == 5
    assert use["reclaimable"]["blobs"] == 1 and use["reclaimable"]["bytes"] == 50_000
    assert [(i["name"], i["blobs"]) for i in use["images"]] == [("app:v1", 3)]

    r = run(root, "gc", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert (report["blobs"], report["kept_blobs"]) == (
        [{"digest": str(garbage), "size": 50_000}],
        4,
    )
    assert not store.exists(garbage)
    assert store.bucket.head(store.location.meta(garbage)) is None
    for kept in (config, layer, root_digest, pinned):
        assert store.exists(kept)
    assert keys(store, "meta") == {store.location.meta(pinned)}

    # Once the image is forgotten, its tree goes at the next run; the pinned blob stays.
    store.image_index().remove("app:v1")
    r = run(root, "gc", "--json")
    assert r.exit_code == 0, r.output
    assert {b["digest"] for b in json.loads(r.stdout)["blobs"]} == {
        str(config),
        str(layer),
        str(root_digest),
    }
    assert [i.digest for i in store.walk()] == [pinned]


def test_gc_aborts_idle_ingests_and_stray_uploads_but_not_held_ones(
    location: S3Location,
    s3_endpoint: S3Endpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "host"
    store = S3Store(location, s3_endpoint.client(), root)
    with store.writer("idle") as w:
        w.write(b"x" * 1000)
    stray_key = store.location.key("staging", "stray")
    stray = store.bucket.create_upload(stray_key)
    held = store.writer("held")
    try:
        held.write(b"y" * 10)
        r = run(root, "gc", "--json")  # the default max age (24 h) keeps them all
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["ingests"] == []
        assert (stray_key, stray) in store.multipart_uploads()

        monkeypatch.setenv("INGESTQ_GC_INGEST_MAX_AGE", "0s")
        r = run(root, "gc", "--json")
        assert r.exit_code == 0, r.output
        gone = [i["ref"] for i in json.loads(r.stdout)["ingests"]]
        assert gone == ["idle", f"upload:{stray_key}"]
        assert [s.ref for s in store.list_statuses()] == ["held"]
        assert store.multipart_uploads() == []
        assert [k for k in keys(store, "ingests") if k.endswith(".tail")] == []
    finally:
        held.close()


def two_hosts(location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path) -> list[S3Store]:
    """Two stores on one bucket prefix with their own local roots and clients, sharing
    one locker (the Redis lease of a real deployment)."""
    locker = FakeRefLocker()
    return [
        S3Store(location, s3_endpoint.client(), tmp_path / name, locker=locker)
        for name in ("host-a", "host-b")
    ]


def test_gc_on_another_host_keeps_the_blobs_of_a_pull_in_progress(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    a, b = two_hosts(location, s3_endpoint, tmp_path)
    lease = JobLease(a.leases(), "pull-job-1", lock_domains(a.locker))
    pulled = Digest.from_bytes(b"a layer of the pull")
    lease.protect(pulled)  # first the lease, then the commit (as a pull does)
    assert put(a, b"a layer of the pull") == pulled
    other = put(a, b"nobody's")
    assert not (tmp_path / "host-b" / "leases").exists()  # nothing local on host B

    report = s3gc.collect(b)
    assert {d for d, _ in report.blobs} == {str(other)}
    assert b.exists(pulled)

    lease.release()  # the image is recorded (or the pull failed for good)
    assert {d for d, _ in s3gc.collect(b).blobs} == {str(pulled)}


def test_gc_refuses_while_a_job_on_another_host_locks_where_it_cannot(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    # Each host with its own lock files only: host B's gc cannot exclude host A's pull
    # between its lease add and its existence check, so it deletes nothing.
    a, b = (
        S3Store(location, s3_endpoint.client(), tmp_path / name) for name in ("host-a", "host-b")
    )
    lease = JobLease(a.leases(), "pull-job-2", lock_domains(a.locker))
    garbage = put(a, b"unreferenced, but gc must not run now")
    with pytest.raises(errdefs.FailedPrecondition, match="pull-job-2") as exc:
        s3gc.collect(b)
    assert "INGESTQ_REDIS_URL" in str(exc.value)
    assert exc.value.details["leases"] == "pull-job-2"
    assert b.exists(garbage)
    assert b.bucket.head(b.location.key("locks", "gc.json")) is None  # lock released
    assert {d for d, _ in s3gc.collect(b, GcOptions(dry_run=True)).blobs} == {str(garbage)}
    r = run(tmp_path / "host-c", "gc")
    assert r.exit_code != 0 and "FailedPrecondition" in r.output
    assert {d for d, _ in s3gc.collect(a).blobs} == {str(garbage)}  # the job's own host may
    lease.release()
    assert s3gc.collect(b).blobs == ()


def test_gc_through_the_same_redis_by_another_name_runs_and_another_redis_refuses(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path, redis_factory: RedisFactory
) -> None:
    """Host A's pull locks through a Redis socket, host B's gc through TCP to that same
    Redis: one lock domain (the database's id), so the gc runs, keeping the pull's blob
    and removing the garbage. A gc with another Redis refuses."""
    with redis_with_socket(redis_factory) as (server, sock):
        a, b, c = (
            S3Store(location, s3_endpoint.client(), tmp_path / name, locker=RedisLeaseLocker(url))
            for name, url in (
                ("host-a", f"unix://{sock}?db=0"),
                ("host-b", server.url),
                ("host-c", redis_factory().url),
            )
        )
        lease = JobLease(a.leases(), "pull-job-3", lock_domains(a.locker))
        pulled = Digest.from_bytes(b"a layer of the pull by socket")
        lease.protect(pulled)
        assert put(a, b"a layer of the pull by socket") == pulled
        garbage = put(a, b"nobody's, by socket")

        with pytest.raises(errdefs.FailedPrecondition, match="pull-job-3"):
            s3gc.collect(c)
        assert {d for d, _ in s3gc.collect(b).blobs} == {str(garbage)}
        assert b.exists(pulled) and not b.exists(garbage)
        lease.release()
        assert {d for d, _ in s3gc.collect(c).blobs} == {str(pulled)}


def test_a_queued_pulls_lease_names_only_what_every_worker_locks(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path, redis_url: str
) -> None:
    """A queued pull plans on host A and may be finalized by a worker anywhere, each
    taking its own host's lock files and the shared Redis: its lease names the Redis
    alone (``shared_domains``), so a gc on host A without Redis, which shares only A's
    lock directory, refuses; a gc with the Redis runs."""
    locks_a = tmp_path / "host-a" / "locks"
    chain = ChainLocker([FileRefLocker(locks_a), RedisLeaseLocker(redis_url)])
    worker_a = S3Store(location, s3_endpoint.client(), tmp_path / "host-a", locker=chain)
    lease = JobLease(worker_a.leases(), "pull-job-4", shared_domains(worker_a.locker))
    garbage = put(worker_a, b"garbage while a queued pull runs")

    gc_a_without_redis = S3Store(location, s3_endpoint.client(), tmp_path / "host-a-gc",
                                 locker=FileRefLocker(locks_a))  # fmt: skip
    assert lock_domains(gc_a_without_redis.locker) <= lock_domains(worker_a.locker)
    with pytest.raises(errdefs.FailedPrecondition, match="pull-job-4"):
        s3gc.collect(gc_a_without_redis)
    gc_b = S3Store(location, s3_endpoint.client(), tmp_path / "host-b",
                   locker=ChainLocker([FileRefLocker(tmp_path / "host-b" / "locks"),
                                       RedisLeaseLocker(redis_url)]))  # fmt: skip
    assert {d for d, _ in s3gc.collect(gc_b).blobs} == {str(garbage)}
    lease.release()


def test_a_refusal_says_when_the_redis_restarted_or_refused_info(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path, redis_url: str
) -> None:
    """Leases naming the gc's own Redis database under an older run id (a restart
    since they began), or a locker's own domain (its Redis user denied INFO), refuse
    with the reason."""
    store = S3Store(location, s3_endpoint.client(), tmp_path / "host",
                    locker=RedisLeaseLocker(redis_url))  # fmt: skip
    (ours,) = lock_domains(store.locker)
    db_id, _, db = ours.rsplit("/", 2)
    lease = JobLease(store.leases(), "pull-job-6", frozenset({f"{db_id}/0ld-run/{db}"}))
    with pytest.raises(errdefs.FailedPrecondition, match="restarted since those jobs began"):
        s3gc.collect(store)
    lease.release()
    lease = JobLease(store.leases(), "pull-job-7", frozenset({"object://other/1/2"}))
    with pytest.raises(errdefs.FailedPrecondition, match=r"allow \+info"):
        s3gc.collect(store)
    lease.release()
    assert s3gc.collect(store).blobs == ()


def test_a_job_that_begins_during_a_run_under_other_locks_stops_it(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock domains are checked again for every batch of deletes: a pull that
    starts on another host, under locks this run does not take, after the run's first
    batch stops it before the next one (FailedPrecondition), keeping the rest."""
    a, b = (
        S3Store(location, s3_endpoint.client(), tmp_path / name) for name in ("host-a", "host-b")
    )
    garbage = [put(a, f"garbage {i}".encode()) for i in range(3)]
    monkeypatch.setattr(s3gc, "SWEEP_BATCH", 1)
    delete = b.bucket.delete
    started: list[JobLease] = []

    def delete_then_a_pull_starts(key: str) -> None:
        delete(key)
        if not started:  # after the first blob: host A's pull begins
            started.append(JobLease(a.leases(), "pull-job-8", lock_domains(a.locker)))

    monkeypatch.setattr(b.bucket, "delete", delete_then_a_pull_starts)
    with pytest.raises(errdefs.FailedPrecondition, match="pull-job-8"):
        s3gc.collect(b)
    assert sum(b.exists(d) for d in garbage) == 2
    started[0].release()


def test_gc_prunes_expired_leases_and_keeps_commits_in_flight_under_a_lease(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    (store,) = two_hosts(location, s3_endpoint, tmp_path)[:1]
    leases = store.leases()
    leases.create("default", "old", {EXPIRE_LABEL: "2000-01-01T00:00:00Z"})
    before = put(store, b"committed before the lease")
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    meta = meta_to_bytes(BlobMeta(an_hour_ago, an_hour_ago), len(b"committed before the lease"))
    store.bucket.put(store.location.meta(before), meta)  # as if committed an hour ago
    # A gRPC Write under a lease whose commit is in flight: the lease names the ingest,
    # whose record is gone, and its blob is not on the lease yet.
    leases.create("default", "writing", {})
    leases.add_resource("default", "writing", "ingests", "gone-ref")
    after = put(store, b"committed since the lease")
    report = s3gc.collect(store)
    assert report.leases == ("default/old",)
    assert {d for d, _ in report.blobs} == {str(before)}
    assert store.exists(after)
    assert [x.id for x in leases.list("default")] == ["writing"]


def test_gc_skips_a_blob_whose_lock_is_held(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    (store,) = two_hosts(location, s3_endpoint, tmp_path)[:1]
    assert isinstance(store.locker, FakeRefLocker)
    busy = put(store, b"being labelled by a publish")
    held = store.locker.hold(blob_lock_ref(busy), "a publish")
    try:
        assert s3gc.collect(store).blobs == ()
    finally:
        held.release()
    assert {d for d, _ in s3gc.collect(store).blobs} == {str(busy)}


class _HookedLocker(FakeRefLocker):
    """Runs ``hook`` right after each blob lock is taken (as a writer on another host
    would act at that moment)."""

    def __init__(self, hook: Callable[[str], None]) -> None:
        super().__init__()
        self.hook = hook

    def try_lock(self, ref: str, holder_id: str) -> MemoryLease:
        lease = super().try_lock(ref, holder_id)
        if ref.startswith("ingestq.blob/"):
            self.hook(ref)
        return lease


def test_a_lease_add_made_before_gc_takes_the_blob_lock_keeps_the_blob(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    other_host = S3Store(location, s3_endpoint.client(), tmp_path / "a", locker=FakeRefLocker())
    added: list[str] = []

    def protect_now(ref: str) -> None:
        if not added:  # after gc's first mark, before it reads the roots again
            added.append(ref)
            other_host.leases().add_resource("ingestq", "pull-2", "content", str(wanted))

    gc_host = S3Store(
        location, s3_endpoint.client(), tmp_path / "b", locker=_HookedLocker(protect_now)
    )
    other_host.leases().create("ingestq", "pull-2", {})
    wanted = put(other_host, b"found committed by a pull on host A")
    assert s3gc.collect(gc_host).blobs == ()
    assert added == [blob_lock_ref(wanted)]
    assert gc_host.exists(wanted)


def test_a_labelled_publish_holds_the_blob_lock(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    (store,) = two_hosts(location, s3_endpoint, tmp_path)[:1]
    assert isinstance(store.locker, FakeRefLocker)
    plain = put(store, b"no labels")
    labelled = put(store, b"with labels", {GC_ROOT_LABEL: "x"})
    locks = [r for r in store.locker.attempts if r.startswith("ingestq.blob/")]
    assert locks == [blob_lock_ref(labelled)]
    assert plain != labelled


def test_two_gc_runs_on_one_bucket_exclude_each_other(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    a, b = two_hosts(location, s3_endpoint, tmp_path)
    garbage = put(a, b"garbage")
    with s3gc.GcLock(a) as running:
        key = running.key
        with pytest.raises(errdefs.Unavailable, match="running already") as exc:
            s3gc.collect(b)
        assert exc.value.details["holder"] == running.holder
        assert b.exists(garbage)
        assert s3gc.collect(b, GcOptions(dry_run=True)).blobs  # a dry run takes no lock
        r = run(tmp_path / "cli", "gc")
        assert r.exit_code != 0 and "running already" in r.output
    assert b.bucket.head(key) is None  # released
    assert {d for d, _ in s3gc.collect(b).blobs} == {str(garbage)}
    assert b.bucket.head(key) is None


def test_two_gc_runs_started_together_remove_each_blob_once(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    hosts = two_hosts(location, s3_endpoint, tmp_path)
    garbage = {str(put(hosts[0], os.urandom(1000 + i))) for i in range(20)}
    start = threading.Barrier(2)
    outcomes: list[object] = []

    def run_gc(store: S3Store) -> None:
        start.wait(30)
        try:
            outcomes.append(s3gc.collect(store))
        except errdefs.Unavailable as e:
            outcomes.append(e)

    threads = [threading.Thread(target=run_gc, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    reports = [o for o in outcomes if isinstance(o, GcReport)]
    refused = [o for o in outcomes if isinstance(o, errdefs.Unavailable)]
    assert len(reports) + len(refused) == 2 and reports
    assert all("running already" in str(e) for e in refused)
    removed = [d for r in reports for d, _ in r.blobs]
    assert sorted(removed) == sorted(garbage)  # each removed by exactly one run
    assert list(hosts[1].walk()) == []


def test_a_gc_lock_whose_holder_died_is_taken_over_and_the_old_holder_stops(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    a, b = two_hosts(location, s3_endpoint, tmp_path)
    dead = s3gc.GcLock(a, ttl=0.0)  # expired a second (the times' resolution) after written
    dead.acquire()
    with entered_once_expired(b) as taker:
        with pytest.raises(errdefs.FailedPrecondition, match="lost its lock"):
            dead.renew()
        with pytest.raises(errdefs.FailedPrecondition):
            dead.check()
        dead.release()  # not its lock any more: left alone
        assert b.bucket.head(taker.key) is not None
        taker.renew()
    assert b.bucket.head(taker.key) is None


@contextlib.contextmanager
def entered_once_expired(store: S3Store, within: float = 15.0) -> Iterator[s3gc.GcLock]:
    """A GcLock on ``store`` entered as soon as the lock object it finds has expired on
    the server's clock (polled; Unavailable after ``within`` seconds)."""
    give_up = time.monotonic() + within
    lock = s3gc.GcLock(store)
    while True:
        try:
            lock.__enter__()
            break
        except errdefs.Unavailable:
            if time.monotonic() > give_up:
                raise
            threading.Event().wait(0.2)
    try:
        yield lock
    finally:
        lock.__exit__()


def forge_lock(store: S3Store, body: bytes) -> str:
    key = store.location.key("locks", "gc.json")
    store.bucket.put(key, body)
    return key


def test_a_gc_lock_whose_holders_clock_is_behind_is_not_taken_over(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    a, b = two_hosts(location, s3_endpoint, tmp_path)
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    body = {
        "holder": "slow-clock",
        "ttl": 120.0,
        "renewed_at": (hour_ago - timedelta(seconds=120)).isoformat(),
        "expires_at": hour_ago.isoformat(),  # long past by this host's clock
    }
    forge_lock(a, json.dumps(body).encode())
    with pytest.raises(errdefs.Unavailable, match="slow-clock") as exc:
        s3gc.GcLock(b).acquire()
    assert exc.value.details["holder"] == "slow-clock"


@pytest.mark.parametrize(
    "body", [b"not json", b'{"holder": "h", "ttl": "0"}', b'{"holder": "h", "ttl": -5}']
)
def test_a_garbled_gc_lock_is_held_for_the_default_time_to_live(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path, body: bytes
) -> None:
    a, b = two_hosts(location, s3_endpoint, tmp_path)
    key = forge_lock(a, body)
    with pytest.raises(errdefs.Unavailable, match="running already"):
        s3gc.GcLock(b).acquire()
    assert b.bucket.get(key)[0] == body  # left as it was


def test_a_gc_lock_whose_holders_clock_is_ahead_is_taken_over_once_its_ttl_passed(
    location: S3Location, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    a, b = two_hosts(location, s3_endpoint, tmp_path)
    year_ahead = datetime.now(UTC) + timedelta(days=365)
    body = {"holder": "fast-clock", "ttl": 0.0, "expires_at": year_ahead.isoformat()}
    key = forge_lock(a, json.dumps(body).encode())
    with entered_once_expired(b) as taker:
        assert json.loads(b.bucket.get(key)[0])["holder"] == taker.holder
