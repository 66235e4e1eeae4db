"""The lease contract: behaviour every :class:`ingestq.store.leases.Leases` owes
(create, get, list with filters, delete, resources, expiry, prune, namespaces, and
changes from several handles and threads that lose nothing).

How an implementation plugs in: subclass :class:`LeasesContract` in a ``test_*.py``
module and provide a ``leases_factory`` fixture. Calling the factory returns a handle on
*one shared* lease store (a second handle is what another process or host would see)::

    from ingestq.store.testing.leases_contract import LeasesContract, LeasesFactory

    class TestMyLeases(LeasesContract):
        @pytest.fixture
        def leases_factory(self, tmp_path: Path) -> LeasesFactory:
            return lambda: LocalStore(tmp_path).leases()

Tests use only the protocol's methods and assert error kinds (and the ``lease "<id>"``
message part containerd clients rely on).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from ingestq import errdefs
from ingestq.store.leases import EXPIRE_LABEL, Leases

#: Returns a new handle on the one lease store a test works on.
LeasesFactory = Callable[[], Leases]

#: Threads of the concurrency tests.
THREADS = 6
#: Changes each thread makes.
CHANGES = 8
#: Bound on every join, seconds.
WAIT = 120.0


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _run_threads(target: Callable[[int], None], n: int = THREADS) -> None:
    """Run ``target(i)`` in ``n`` threads released together; re-raise the first error."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(WAIT)
            target(i)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]


class LeasesContract:
    """The lease contract (see the module docstring)."""

    @pytest.fixture
    def leases(self, leases_factory: LeasesFactory) -> Leases:
        """One handle on the lease store."""
        return leases_factory()

    def test_create_get_list_delete(self, leases: Leases) -> None:
        a = leases.create("default", "a", {"k": "v"})
        assert (a.id, dict(a.labels), tuple(a.resources)) == ("a", {"k": "v"}, ())
        generated = leases.create("default", "", {})
        assert generated.id and generated.id != "a"
        assert leases.get("default", "a") == a
        assert sorted(x.id for x in leases.list("default")) == sorted(["a", generated.id])
        assert [x.id for x in leases.list("default", "labels.k==v")] == ["a"]
        assert [x.id for x in leases.list("default", "id==a")] == ["a"]
        assert leases.list("other") == []  # per namespace
        leases.delete("default", "a")
        with pytest.raises(errdefs.NotFound, match='lease "a"'):
            leases.get("default", "a")
        with pytest.raises(errdefs.NotFound, match='lease "a"'):
            leases.delete("default", "a")
        assert [x.id for x in leases.list("default")] == [generated.id]

    def test_a_second_create_of_an_id_is_already_exists(self, leases: Leases) -> None:
        leases.create("default", "dup", {"first": "1"})
        with pytest.raises(errdefs.AlreadyExists, match='lease "dup"'):
            leases.create("default", "dup", {"second": "2"})
        assert dict(leases.get("default", "dup").labels) == {"first": "1"}

    def test_concurrent_creates_of_one_id_have_one_winner(
        self, leases_factory: LeasesFactory
    ) -> None:
        won: list[int] = []
        lost: list[int] = []

        def create(i: int) -> None:
            try:
                leases_factory().create("default", "contested", {"who": str(i)})
                won.append(i)
            except errdefs.AlreadyExists:
                lost.append(i)

        _run_threads(create)
        assert len(won) == 1 and len(lost) == THREADS - 1
        assert leases_factory().get("default", "contested").labels == {"who": str(won[0])}

    def test_every_handle_sees_the_same_leases(self, leases_factory: LeasesFactory) -> None:
        leases_factory().create("ns1", "x", {"a": "b"})
        other = leases_factory()
        assert other.get("ns1", "x").labels == {"a": "b"}
        other.add_resource("ns1", "x", "content", "sha256:" + "1" * 64)
        assert leases_factory().resources("ns1", "x") == (("content", "sha256:" + "1" * 64),)
        assert "ns1" in leases_factory().namespaces()

    def test_resources(self, leases: Leases) -> None:
        leases.create("default", "r", {})
        digest = "sha256:" + "a" * 64
        leases.add_resource("default", "r", "ingests", "layer-1")
        leases.add_resource("default", "r", "content", digest)
        leases.add_resource("default", "r", "content", digest)  # idempotent
        assert tuple(leases.resources("default", "r")) == (
            ("ingests", "layer-1"),
            ("content", digest),
        )
        leases.add_resources("default", "r", [("content", digest), ("snapshots/x", "k")] * 2)
        assert tuple(leases.resources("default", "r"))[2:] == (("snapshots/x", "k"),)
        leases.delete_resource("default", "r", "ingests", "layer-1")
        leases.delete_resource("default", "r", "ingests", "never")  # absent is fine
        assert tuple(leases.resources("default", "r")) == (
            ("content", digest),
            ("snapshots/x", "k"),
        )
        assert tuple(leases.get("default", "r").resources) == tuple(
            leases.resources("default", "r")
        )

    def test_resource_errors(self, leases: Leases) -> None:
        leases.create("default", "r", {})
        for call in (
            lambda: leases.add_resource("default", "missing", "content", "x"),
            lambda: leases.add_resources("default", "missing", [("content", "x")]),
            lambda: leases.delete_resource("default", "missing", "content", "x"),
            lambda: leases.resources("default", "missing"),
        ):
            with pytest.raises(errdefs.NotFound, match='lease "missing"'):
                call()
        with pytest.raises(errdefs.InvalidArgument):
            leases.add_resource("default", "r", "containers", "x")
        with pytest.raises(errdefs.InvalidArgument):
            leases.add_resource("default", "r", "content", "")
        with pytest.raises(errdefs.InvalidArgument):
            leases.add_resources("default", "r", [("content", "ok"), ("snapshots/", "k")])
        with pytest.raises(errdefs.InvalidArgument, match="longer than 4096 bytes"):
            leases.add_resource("default", "r", "ingests", "x" * 4097)
        assert tuple(leases.resources("default", "r")) == ()  # nothing of a bad batch

    def test_a_lease_id_is_at_most_4_kib(self, leases: Leases) -> None:
        """Past 4 KiB an id is refused by every store (an S3 store's keys allow less)."""
        leases.create("default", "i" * 200, {})
        with pytest.raises(errdefs.InvalidArgument, match="longer than 4096 bytes"):
            leases.create("default", "i" * 4097, {})
        assert [lease.id for lease in leases.list("default")] == ["i" * 200]

    def test_concurrent_adds_to_one_lease_lose_nothing(self, leases_factory: LeasesFactory) -> None:
        leases_factory().create("default", "busy", {})

        def add(i: int) -> None:
            mine = leases_factory()
            for j in range(CHANGES):
                mine.add_resource("default", "busy", "ingests", f"ref-{i}-{j}")

        _run_threads(add)
        got = set(leases_factory().resources("default", "busy"))
        want = {("ingests", f"ref-{i}-{j}") for i in range(THREADS) for j in range(CHANGES)}
        assert got == want

    def test_concurrent_adds_and_deletes_of_resources_lose_nothing(
        self, leases_factory: LeasesFactory
    ) -> None:
        leases = leases_factory()
        leases.create("default", "mixed", {})
        leases.add_resources("default", "mixed", [("ingests", f"old-{i}") for i in range(THREADS)])

        def change(i: int) -> None:
            mine = leases_factory()
            mine.delete_resource("default", "mixed", "ingests", f"old-{i}")
            mine.add_resources("default", "mixed", [("ingests", f"new-{i}-{j}") for j in range(3)])

        _run_threads(change)
        got = set(leases.resources("default", "mixed"))
        assert got == {("ingests", f"new-{i}-{j}") for i in range(THREADS) for j in range(3)}

    def test_expired_leases_are_gone_for_every_call(self, leases: Leases) -> None:
        now = datetime.now(UTC)
        leases.create("default", "old", {EXPIRE_LABEL: _stamp(now - timedelta(seconds=1))})
        leases.create("default", "new", {EXPIRE_LABEL: _stamp(now + timedelta(hours=1))})
        leases.create("default", "odd", {EXPIRE_LABEL: "not a time"})
        assert sorted(x.id for x in leases.list("default")) == ["new", "odd"]
        with pytest.raises(errdefs.NotFound):
            leases.get("default", "old")
        with pytest.raises(errdefs.NotFound):
            leases.add_resource("default", "old", "content", "sha256:" + "b" * 64)
        with pytest.raises(errdefs.NotFound):
            leases.delete("default", "old")
        # An expired id may be created again.
        again = leases.create("default", "old", {})
        assert leases.get("default", "old") == again

    def test_prune_expired(self, leases: Leases) -> None:
        now = datetime.now(UTC)
        past = _stamp(now - timedelta(seconds=1))
        leases.create("default", "gone-1", {EXPIRE_LABEL: past})
        leases.create("default", "gone-2", {EXPIRE_LABEL: past})
        leases.create("default", "kept", {EXPIRE_LABEL: _stamp(now + timedelta(hours=1))})
        # A store may drop expired leases at any change (the local one does): the ids
        # returned are those still recorded.
        listed = leases.prune_expired("default", now, dry_run=True)
        assert set(listed) <= {"gone-1", "gone-2"} and listed == sorted(listed)
        assert leases.prune_expired("default", now) == listed
        assert leases.prune_expired("default", now) == []
        assert [x.id for x in leases.list("default")] == ["kept"]

    def test_namespaces(self, leases: Leases) -> None:
        assert leases.namespaces() == []
        leases.create("zeta", "1", {})
        leases.create("alpha.ns", "1", {})
        leases.create("alpha.ns", "2", {})
        assert leases.namespaces() == ["alpha.ns", "zeta"]

    def test_bad_namespaces_and_labels(self, leases: Leases) -> None:
        for ns in ("", "../x", "a/b", ".hidden"):
            with pytest.raises(errdefs.InvalidArgument):
                leases.create(ns, "x", {})
            with pytest.raises(errdefs.InvalidArgument):
                leases.list(ns)
        with pytest.raises(errdefs.InvalidArgument):
            leases.create("default", "big", {"k": "v" * 5000})
        with pytest.raises(errdefs.InvalidArgument):
            leases.list("default", "labels.k==")  # a malformed filter

    def test_ids_are_opaque(self, leases: Leases) -> None:
        odd = ["with/slash", "with space", "with%percent", "ünïcode", "a.json"]
        for lease_id in odd:
            leases.create("default", lease_id, {})
            leases.add_resource("default", lease_id, "ingests", lease_id)
        assert sorted(x.id for x in leases.list("default")) == sorted(odd)
        for lease_id in odd:
            assert tuple(leases.resources("default", lease_id)) == (("ingests", lease_id),)
            leases.delete("default", lease_id)
        assert leases.list("default") == []


__all__ = ["CHANGES", "THREADS", "LeasesContract", "LeasesFactory"]
