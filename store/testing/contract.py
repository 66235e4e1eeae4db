"""The store contract: behaviour every :class:`store.protocols.Store` implementation owes.

Modelled on containerd's ``content/testsuite``: writer basics, resume (after close, after
a crash, with truncate, after a failed commit, with a different total, with a total
given without a digest, through the copy helper), commit-exists, commit error states,
labels, small blobs, truncate, abort, status and list_statuses with ref filters, walk
with digest and label filters, delete, ranged reads.

How an implementation plugs in: subclass :class:`StoreContract` in a ``test_*.py``
module and provide a ``store_factory`` fixture. Calling the factory returns a handle on
*one shared* store (a second handle is what another client or process would see), so
the suite can check that a write in progress is visible, and locked, across handles::

    from ingestq.store.testing.contract import StoreContract, StoreFactory

    class TestGrpcStoreContract(StoreContract):
        @pytest.fixture
        def store_factory(self, grpc_server) -> Iterator[StoreFactory]:
            clients = []
            def make() -> Store:
                clients.append(GrpcStore(grpc_server.address))
                return clients[-1]
            yield make
            for c in clients:
                c.close()

Optionally override :meth:`StoreContract.crash` to leave a writer the way a killed
process would (the default just closes it); the local store's subclass does.

Every test takes the ``store`` fixture (``store_factory()``), uses only the protocol
methods, and asserts error *kinds* (and the message parts containerd clients rely on).

Capabilities: ingestq's deliberate extensions
----------------------------------------------

Some tests check what ingestq does beyond containerd. Each needs a capability; a
subclass lists what its store has in :attr:`StoreContract.capabilities` (all of them by
default) and the tests needing any other are not generated for it (they do not exist
in the subclass, so nothing is skipped):

:data:`HOLDER`
    Status names the writer that holds a ref (containerd's Status has no such field,
    so no store behind the gRPC API reports one).
:data:`ABORT_HELD`
    Abort of a ref that a writer holds is Unavailable and keeps the ingest. containerd
    removes the ingest under the writer.
:data:`RESUME_TOTAL`
    A writer whose known total differs from the unfinished ingest's is refused with
    FailedPrecondition (``provided total differs``). containerd 1.6 logs that error and
    starts the ingest over at offset 0 *without truncating the old bytes*.
:data:`DIGEST_ALGORITHMS`
    Commits verify sha384 and sha512 digests. containerd 1.6's local store always
    hashes sha256, so a sha512 commit fails its digest check.
:data:`WALK_UPDATED_AT`
    ``walk`` reports each blob exactly as ``info`` does. containerd 1.6's ``List`` RPC
    leaves ``updated_at`` unset (it reads as 0001-01-01).
:data:`STATUS_EXPECTED`
    Status reports the expected digest an ingest was opened with. containerd's local
    store never fills it.
:data:`PUT`
    The store is a :class:`store.protocols.Putter`: ``put`` commits content held in
    memory in one call, without an ingest. containerd and the gRPC API have no such
    call, so it is not in :data:`ALL_CAPABILITIES`: a store that has it says so.

Other differences from containerd (1.6, run through :class:`api.client.GrpcStore`)
----------------------------------------------------------------------------------

The contract is written so both pass; these are the places where that needed care:

* The lock error names the ref containerd's metadata layer uses underneath,
  ``ref default/1/<ref> locked for <duration> (since <time>)``; ingestq's names the ref
  itself. The contract checks ``<ref> locked``.
* containerd retries a locked ref for about a second before answering Unavailable;
  ingestq answers at once (``ingestq serve`` waits briefly, see ``--lock-wait``).
* Deleting a blob in containerd only drops the namespace's reference; the file stays
  until the garbage collector runs, and until then a writer for that digest starts at
  offset = size (containerd's "shared" content). Writers therefore always continue at
  the offset their Status reports, as ``content.Copy`` does (:meth:`StoreContract.ingest`).
* containerd keeps blobs, labels and ingests per namespace; ingestq shares them between
  namespaces (see :mod:`api.namespaces`). The contract uses one namespace.
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import pytest

from ingestq import errdefs
from ingestq.store.digest import EMPTY, Digest
from ingestq.store.helpers import copy, write_blob
from ingestq.store.protocols import Putter, Store, Writer
from ingestq.store.values import Descriptor, Info

StoreFactory = Callable[[], Store]

#: Status names the writer holding a ref.
HOLDER = "holder"
#: Abort of a held ref is Unavailable.
ABORT_HELD = "abort-held"
#: A writer with a different total than the unfinished ingest's is FailedPrecondition.
RESUME_TOTAL = "resume-total"
#: Commits verify sha384 and sha512 digests.
DIGEST_ALGORITHMS = "digest-algorithms"
#: walk reports each blob exactly as info does (updated_at included).
WALK_UPDATED_AT = "walk-updated-at"
#: Status reports the expected digest.
STATUS_EXPECTED = "status-expected"
#: Every capability: what ingestq's own stores have.
ALL_CAPABILITIES = frozenset(
    {HOLDER, ABORT_HELD, RESUME_TOTAL, DIGEST_ALGORITHMS, WALK_UPDATED_AT, STATUS_EXPECTED}
)

#: The store is a Putter (not in ALL_CAPABILITIES: the gRPC API has no such call).
PUT = "put"
#: Every capability a subclass may list.
KNOWN_CAPABILITIES = ALL_CAPABILITIES | {PUT}

_F = TypeVar("_F", bound=Callable[..., Any])


def requires(*capabilities: str) -> Callable[[_F], _F]:
    """Mark a contract test as needing ``capabilities`` (see the module docstring)."""
    unknown = set(capabilities) - KNOWN_CAPABILITIES
    if unknown:
        raise ValueError(f"unknown capabilities {sorted(unknown)}")

    def mark(fn: _F) -> _F:
        fn.__contract_requires__ = frozenset(capabilities)  # type: ignore[attr-defined]
        return fn

    return mark


#: Slack for comparing store timestamps with the test's clock (a remote store may
#: round, and its clock is the same host's here).
CLOCK_SLACK = timedelta(seconds=2)


def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random content."""
    return random.Random(seed).randbytes(size)


def desc_of(data: bytes, *, with_size: bool = True) -> Descriptor:
    """The descriptor of ``data``."""
    return Descriptor(Digest.from_bytes(data), len(data) if with_size else 0)


class _NonSeekable(io.RawIOBase):
    """A pipe-like source: read() only, never seekable."""

    def __init__(self, data: bytes) -> None:
        self._src = io.BytesIO(data)
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        self.reads += 1
        chunk = self._src.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


class StoreContract:
    """The contract tests. Subclasses provide ``store_factory`` (see the module doc) and
    may narrow :attr:`capabilities`."""

    #: What the store under test does beyond containerd; tests needing anything else
    #: are removed from the subclass.
    capabilities: ClassVar[frozenset[str]] = ALL_CAPABILITIES

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = cls.capabilities - KNOWN_CAPABILITIES
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown capabilities {sorted(unknown)}")
        for name in dir(cls):
            needs: frozenset[str] = getattr(
                getattr(cls, name), "__contract_requires__", frozenset()
            )
            if name.startswith("test_") and not needs <= cls.capabilities:
                setattr(cls, name, None)  # not a function: pytest does not collect it

    @pytest.fixture
    def store(self, store_factory: StoreFactory) -> Store:
        """A handle on the store under test."""
        return store_factory()

    def crash(self, writer: Writer) -> None:
        """Leave ``writer`` as a process killed mid-write would: its lock free, its data
        kept. The default closes it; implementations may simulate more faithfully."""
        writer.close()

    # helpers ---------------------------------------------------------------------------
    def ingest(self, store: Store, data: bytes, ref: str = "ref", **labels: str) -> Info:
        """Write ``data`` under ``ref`` from wherever the writer starts, and commit it."""
        with store.writer(ref, desc_of(data)) as w:
            w.write(data[w.status().offset :])
            return w.commit(len(data), Digest.from_bytes(data), labels or None)

    def read_all(self, store: Store, digest: Digest) -> bytes:
        with store.reader_at(digest) as ra:
            return ra.read_at(0, ra.size)

    # writer basics ---------------------------------------------------------------------
    def test_fresh_writer_reports_empty_digest_and_zero_offset(self, store: Store) -> None:
        with store.writer("fresh") as w:
            assert w.digest() == EMPTY
            st = w.status()
            assert (st.ref, st.offset, st.total) == ("fresh", 0, 0)

    def test_write_then_commit_publishes_content(self, store: Store) -> None:
        data = blob(300_000, seed=1)
        before = datetime.now(UTC)
        w = store.writer("basic", desc_of(data))
        assert w.write(data[:1000]) == 1000
        assert w.write(data[1000:]) == len(data) - 1000
        assert w.status().offset == len(data)
        assert w.digest() == Digest.from_bytes(data)
        info = w.commit(len(data), Digest.from_bytes(data))
        after = datetime.now(UTC)
        assert info.digest == Digest.from_bytes(data)
        assert info.size == len(data)
        assert before - CLOCK_SLACK <= info.created_at <= after + CLOCK_SLACK
        assert store.info(info.digest) == info
        assert self.read_all(store, info.digest) == data

    def test_commit_closes_the_writer_and_drops_the_ingest(self, store: Store) -> None:
        data = blob(10, seed=2)
        w = store.writer("closes", desc_of(data))
        w.write(data)
        w.commit(len(data), Digest.from_bytes(data))
        with pytest.raises(errdefs.FailedPrecondition):
            w.write(b"more")
        with pytest.raises(errdefs.FailedPrecondition):
            w.commit(len(data), Digest.from_bytes(data))
        w.close()
        w.close()  # closing twice is fine
        with pytest.raises(errdefs.NotFound):
            store.status("closes")
        assert [s.ref for s in store.list_statuses()] == []

    def test_commit_with_unknown_size_and_digest(self, store: Store) -> None:
        data = blob(5000, seed=3)
        with store.writer("unknown") as w:
            w.write(data)
            info = w.commit()
        assert info.digest == Digest.from_bytes(data)
        assert info.size == len(data)

    def test_empty_ref_is_invalid(self, store: Store) -> None:
        with pytest.raises(errdefs.InvalidArgument):
            store.writer("")

    def test_second_writer_on_a_ref_is_unavailable(self, store_factory: StoreFactory) -> None:
        one, two = store_factory(), store_factory()
        w = one.writer("busy")
        try:
            with pytest.raises(errdefs.Unavailable) as exc:
                two.writer("busy")
            assert "busy locked" in str(exc.value)
        finally:
            w.close()
        two.writer("busy").close()

    def test_status_of_a_live_write_is_visible_to_another_handle(
        self, store_factory: StoreFactory
    ) -> None:
        one, two = store_factory(), store_factory()
        data = blob(4096, seed=4)
        before = datetime.now(UTC)
        with one.writer("visible", desc_of(data)) as w:
            w.write(data[:1000])
            st = two.status("visible")
            assert (st.ref, st.offset, st.total) == ("visible", 1000, len(data))
            assert before - CLOCK_SLACK <= st.started_at <= st.updated_at
            assert st.updated_at <= datetime.now(UTC) + CLOCK_SLACK
            assert [s.ref for s in two.list_statuses()] == ["visible"]

    def test_a_reopened_writer_reports_the_updated_at_of_the_last_write(self, store: Store) -> None:
        with store.writer("updated", total=100) as w:
            w.write(blob(40, seed=35))
            last = w.status().updated_at
        assert store.status("updated").updated_at == last
        deadline = time.monotonic() + 5
        while datetime.now(UTC) <= last + timedelta(milliseconds=50):  # let time pass
            assert time.monotonic() < deadline, "the clock does not move"
            time.sleep(0.01)
        with store.writer("updated", total=100) as w:
            assert w.status().offset == 40
            assert w.status().updated_at == last  # not the time of the reopen
        assert store.status("updated").updated_at == last
        store.abort("updated")

    @requires(HOLDER)
    def test_status_names_the_holder(self, store_factory: StoreFactory) -> None:
        one, two = store_factory(), store_factory()
        with one.writer("held") as w:
            mine = w.status().holder
            assert mine is not None and mine.id
            seen = two.status("held").holder
            assert seen is not None and seen.id == mine.id
            listed = [(s.ref, s.holder.id if s.holder else None) for s in two.list_statuses()]
            assert listed == [("held", mine.id)]
        assert two.status("held").holder is None

    @requires(STATUS_EXPECTED)
    def test_status_reports_the_expected_digest(self, store: Store) -> None:
        data = blob(100, seed=34)
        with store.writer("expects", desc_of(data)) as w:
            assert w.status().expected == Digest.from_bytes(data)
            assert store.status("expects").expected == Digest.from_bytes(data)
        assert store.status("expects").expected == Digest.from_bytes(data)

    def test_status_of_unknown_ref_is_not_found(self, store: Store) -> None:
        with pytest.raises(errdefs.NotFound):
            store.status("nothing-here")

    # resume ----------------------------------------------------------------------------
    def test_resume_after_close(self, store: Store) -> None:
        data = blob(200_000, seed=5)
        w = store.writer("resume-close", desc_of(data))
        w.write(data[:70_000])
        started = w.status().started_at
        w.close()
        assert store.status("resume-close").offset == 70_000
        w = store.writer("resume-close", desc_of(data))
        st = w.status()
        assert st.offset == 70_000
        assert st.started_at == started
        assert w.digest() == Digest.from_bytes(data[:70_000])
        w.write(data[70_000:])
        info = w.commit(len(data), Digest.from_bytes(data))
        assert self.read_all(store, info.digest) == data

    def test_resume_after_crash(self, store: Store) -> None:
        data = blob(150_000, seed=6)
        w = store.writer("resume-crash", desc_of(data))
        w.write(data[:50_000])
        self.crash(w)
        w2 = store.writer("resume-crash", desc_of(data))
        assert w2.status().offset == 50_000
        assert w2.digest() == Digest.from_bytes(data[:50_000])
        w2.write(data[50_000:])
        info = w2.commit(len(data), Digest.from_bytes(data))
        assert self.read_all(store, info.digest) == data

    def test_resume_twice_accumulates(self, store: Store) -> None:
        data = blob(30_000, seed=7)
        for lo, hi in ((0, 10_000), (10_000, 20_000)):
            w = store.writer("twice", desc_of(data))
            assert w.status().offset == lo
            w.write(data[lo:hi])
            w.close()
        with store.writer("twice", desc_of(data)) as w:
            assert w.status().offset == 20_000
            w.write(data[20_000:])
            assert w.commit(len(data), Digest.from_bytes(data)).size == len(data)

    def test_resume_with_truncate(self, store: Store) -> None:
        data = blob(40_000, seed=8)
        w = store.writer("resume-trunc", desc_of(data))
        w.write(b"garbage that must not survive" * 100)
        w.close()
        w = store.writer("resume-trunc", desc_of(data))
        assert w.status().offset > 0
        w.truncate(0)
        assert w.status().offset == 0
        assert w.digest() == EMPTY
        w.write(data)
        info = w.commit(len(data), Digest.from_bytes(data))
        assert self.read_all(store, info.digest) == data

    def test_resume_after_failed_commit(self, store: Store) -> None:
        data = blob(20_000, seed=9)
        w = store.writer("resume-failed", desc_of(data))
        w.write(data)
        with pytest.raises(errdefs.FailedPrecondition):
            w.commit(len(data), Digest.from_bytes(b"something else"))
        assert store.status("resume-failed").offset == len(data)
        w = store.writer("resume-failed", desc_of(data))
        assert w.status().offset == len(data)
        info = w.commit(len(data), Digest.from_bytes(data))
        assert self.read_all(store, info.digest) == data

    @requires(RESUME_TOTAL)
    def test_resume_with_a_different_total_is_refused(self, store: Store) -> None:
        data = blob(10_000, seed=10)
        w = store.writer("resume-total", desc_of(data))
        w.write(data[:4000])
        w.close()
        other = Descriptor(Digest.from_bytes(data), len(data) + 1)
        with pytest.raises(errdefs.FailedPrecondition) as exc:
            store.writer("resume-total", other)
        assert "total differs" in str(exc.value)
        assert store.status("resume-total").offset == 4000
        with store.writer("resume-total") as w:  # unknown size: resumes, keeps the total
            st = w.status()
            assert (st.offset, st.total) == (4000, len(data))
            w.write(data[4000:])
            w.commit(len(data), Digest.from_bytes(data))

    def test_a_total_without_a_digest_is_recorded(self, store: Store) -> None:
        data = blob(10_000, seed=30)
        with store.writer("total-only", total=len(data)) as w:
            assert w.status().total == len(data)
            w.write(data[:4000])
        assert (store.status("total-only").offset, store.status("total-only").total) == (
            4000,
            len(data),
        )
        with store.writer("total-only") as w:  # unknown size: resumes, keeps the total
            assert w.status().offset == 4000
            assert store.status("total-only").total == len(data)
            w.write(data[4000:])
            info = w.commit(len(data))
        assert info.digest == Digest.from_bytes(data)

    @requires(RESUME_TOTAL)
    def test_resume_with_a_different_total_without_a_digest_is_refused(self, store: Store) -> None:
        data = blob(10_000, seed=31)
        with store.writer("resume-total-only", total=len(data)) as w:
            w.write(data[:4000])
        with pytest.raises(errdefs.FailedPrecondition) as exc:
            store.writer("resume-total-only", total=len(data) + 1)
        assert "total differs" in str(exc.value)
        assert store.status("resume-total-only").offset == 4000
        with store.writer("resume-total-only") as w:  # unknown size: resumes, keeps the total
            assert (w.status().offset, w.status().total) == (4000, len(data))
            w.write(data[4000:])
            w.commit(len(data), Digest.from_bytes(data))

    def test_a_total_other_than_the_expected_size_is_invalid(self, store: Store) -> None:
        data = blob(1000, seed=32)
        with pytest.raises(errdefs.InvalidArgument):
            store.writer("total-and-size", desc_of(data), total=len(data) + 1)
        with pytest.raises(errdefs.InvalidArgument):
            store.writer("total-and-size", total=-1)
        with store.writer("total-and-size", desc_of(data), total=len(data)) as w:
            assert w.status().total == len(data)

    @pytest.mark.parametrize("how", ["seek", "discard", "restart"])
    def test_resume_through_copy(self, store: Store, how: str) -> None:
        data = blob(3 * 1024 * 1024 + 17, seed=11)
        w = store.writer(f"resume-copy-{how}", desc_of(data))
        w.write(data[:1_500_000])
        w.close()
        source: io.RawIOBase | io.BytesIO = (
            io.BytesIO(data) if how == "seek" else _NonSeekable(data)
        )
        with store.writer(f"resume-copy-{how}", desc_of(data)) as w:
            info = copy(w, source, len(data), Digest.from_bytes(data), discard=how != "restart")
        assert info is not None
        assert self.read_all(store, info.digest) == data

    # commit exists ---------------------------------------------------------------------
    def test_writer_for_committed_content_is_already_exists(self, store: Store) -> None:
        data = blob(1000, seed=12)
        self.ingest(store, data, "first")
        with pytest.raises(errdefs.AlreadyExists):
            store.writer("second", desc_of(data))
        with pytest.raises(errdefs.AlreadyExists):
            store.writer("second", desc_of(data, with_size=False))

    def test_already_exists_wins_over_a_locked_ref(self, store_factory: StoreFactory) -> None:
        one, two = store_factory(), store_factory()
        data = blob(1000, seed=13)
        self.ingest(one, data, "done")
        with one.writer("held"), pytest.raises(errdefs.AlreadyExists):
            two.writer("held", desc_of(data))

    def test_commit_of_committed_content_is_already_exists(self, store: Store) -> None:
        data = blob(1000, seed=14)
        w = store.writer("late")  # no expected digest: the writer cannot know
        self.ingest(store, data, "early")
        w.write(data)
        with pytest.raises(errdefs.AlreadyExists):
            w.commit(len(data), Digest.from_bytes(data))
        with pytest.raises(errdefs.NotFound):
            store.status("late")  # AlreadyExists discards the ingest
        assert self.read_all(store, Digest.from_bytes(data)) == data

    def test_write_blob_returns_info_of_existing_content(self, store: Store) -> None:
        data = blob(1000, seed=15)
        info = self.ingest(store, data, "orig", a="1")
        unread = _NonSeekable(b"never read")
        assert write_blob(store, "again", unread, desc_of(data)) == info
        assert unread.reads == 0

    def test_write_blob_of_a_small_known_size_leaves_no_ingest(self, store: Store) -> None:
        data = blob(4096, seed=40)
        info = write_blob(store, "small-known", io.BytesIO(data), desc_of(data), {"k": "v"})
        assert info == store.info(info.digest)
        assert (info.size, dict(info.labels)) == (4096, {"k": "v"})
        assert self.read_all(store, info.digest) == data
        assert store.list_statuses() == []
        with pytest.raises(errdefs.NotFound):
            store.status("small-known")

    def test_write_blob_of_a_short_source_is_data_loss(self, store: Store) -> None:
        data = blob(4096, seed=41)
        with pytest.raises(errdefs.DataLoss, match="got 4000 of 4096"):
            write_blob(store, "short", io.BytesIO(data[:4000]), desc_of(data))
        with pytest.raises(errdefs.NotFound):
            store.info(Digest.from_bytes(data))

    def test_write_blob_of_a_long_source_is_failed_precondition(self, store: Store) -> None:
        data = blob(4096, seed=42)
        with pytest.raises(errdefs.FailedPrecondition, match="longer than the expected"):
            write_blob(store, "long", io.BytesIO(data + b"x"), desc_of(data))
        with pytest.raises(errdefs.NotFound):
            store.info(Digest.from_bytes(data))

    def test_write_blob_of_wrong_small_content_commits_nothing(self, store: Store) -> None:
        data, other = blob(4096, seed=43), blob(4096, seed=44)
        with pytest.raises(errdefs.FailedPrecondition, match="unexpected commit digest"):
            write_blob(store, "wrong", io.BytesIO(other), desc_of(data))
        for d in (data, other):
            with pytest.raises(errdefs.NotFound):
                store.info(Digest.from_bytes(d))

    # put (in-memory content in one call) -------------------------------------------------
    @requires(PUT)
    def test_put_commits_without_an_ingest(self, store: Store) -> None:
        assert isinstance(store, Putter)
        data = blob(4096, seed=50)
        before = datetime.now(UTC) - CLOCK_SLACK
        info = store.put("put", desc_of(data), data)
        assert info == store.info(info.digest)
        assert (info.digest, info.size, dict(info.labels)) == (Digest.from_bytes(data), 4096, {})
        assert before <= info.created_at == info.updated_at <= datetime.now(UTC) + CLOCK_SLACK
        assert self.read_all(store, info.digest) == data
        assert store.list_statuses() == []
        with pytest.raises(errdefs.NotFound):
            store.status("put")

    @requires(PUT)
    def test_put_records_labels(self, store: Store) -> None:
        assert isinstance(store, Putter)
        data = blob(100, seed=51)
        info = store.put("put-labels", desc_of(data), data, {"a": "1", "gone": ""})
        assert dict(info.labels) == {"a": "1"} == dict(store.info(info.digest).labels)
        updated = store.update(replace(info, labels={"b": "2"}), "labels.b")
        assert dict(updated.labels) == {"a": "1", "b": "2"}

    @requires(PUT)
    def test_put_of_committed_content_is_already_exists(self, store: Store) -> None:
        assert isinstance(store, Putter)
        data = blob(4096, seed=52)
        info = store.put("first", desc_of(data), data)
        with pytest.raises(errdefs.AlreadyExists):
            store.put("second", desc_of(data), data, {"ignored": "1"})
        assert store.info(info.digest) == info
        assert store.list_statuses() == []

    @requires(PUT)
    def test_put_with_a_wrong_digest_or_size_keeps_nothing(self, store: Store) -> None:
        assert isinstance(store, Putter)
        data, other = blob(4096, seed=53), blob(4096, seed=54)
        with pytest.raises(errdefs.FailedPrecondition, match="unexpected commit digest"):
            store.put("bad", desc_of(data), other)
        with pytest.raises(errdefs.FailedPrecondition, match="failed size validation"):
            store.put("bad", Descriptor(Digest.from_bytes(data), 4000), data)
        for d in (data, other):
            with pytest.raises(errdefs.NotFound):
                store.info(Digest.from_bytes(d))
        assert store.list_statuses() == []

    @requires(PUT)
    def test_put_refuses_bad_refs_and_labels(self, store: Store) -> None:
        assert isinstance(store, Putter)
        data = blob(10, seed=55)
        with pytest.raises(errdefs.InvalidArgument):
            store.put("", desc_of(data), data)
        with pytest.raises(errdefs.InvalidArgument):
            store.put("r", desc_of(data), data, {"k" * 4000: "v" * 100})
        with pytest.raises(errdefs.NotFound):
            store.info(Digest.from_bytes(data))

    @requires(PUT)
    def test_put_finishes_and_drops_an_unfinished_ingest_of_its_ref(self, store: Store) -> None:
        assert isinstance(store, Putter)
        data = blob(4096, seed=56)
        with store.writer("half", desc_of(data)) as w:
            w.write(data[:1000])
        info = store.put("half", desc_of(data), data, {"a": "1"})
        assert (info.digest, dict(info.labels)) == (Digest.from_bytes(data), {"a": "1"})
        assert self.read_all(store, info.digest) == data
        with pytest.raises(errdefs.NotFound):
            store.status("half")

    @requires(PUT)
    def test_put_over_an_unfinished_ingest_of_other_bytes_starts_it_over(
        self, store: Store
    ) -> None:
        """A writer fed the wrong bytes for its descriptor (a lying source, or writers
        forced onto one ref) leaves an unfinished ingest; a put of the real content on
        that ref holds every byte, so it publishes them instead of failing on the
        adopted prefix."""
        assert isinstance(store, Putter)
        real, other = blob(3000, seed=59), blob(3000, seed=60)
        w = store.writer("lied-to", desc_of(real))
        w.write(other[:1000])
        w.close()
        assert store.put("lied-to", desc_of(real), real).digest == Digest.from_bytes(real)
        assert self.read_all(store, Digest.from_bytes(real)) == real
        with pytest.raises(errdefs.NotFound):
            store.status("lied-to")

    @requires(PUT, ABORT_HELD)
    def test_put_on_a_held_ingest_is_unavailable(self, store_factory: StoreFactory) -> None:
        a, b = store_factory(), store_factory()
        assert isinstance(b, Putter)
        data = blob(4096, seed=57)
        with a.writer("held", desc_of(data)) as w:
            w.write(data[:10])
            with pytest.raises(errdefs.Unavailable, match="held locked"):
                b.put("held", desc_of(data), data)
            with pytest.raises(errdefs.NotFound):
                b.info(Digest.from_bytes(data))

    @requires(PUT)
    def test_put_of_content_larger_than_small_blob_max(self, store: Store) -> None:
        assert isinstance(store, Putter)
        data = blob(store.small_blob_max + 1, seed=58)
        info = store.put("large", desc_of(data), data)
        assert info.size == len(data)
        assert self.read_all(store, info.digest) == data
        assert store.list_statuses() == []

    # commit error states -----------------------------------------------------------------
    def test_commit_with_wrong_size_keeps_the_ingest(self, store: Store) -> None:
        data = blob(5000, seed=16)
        w = store.writer("badsize")
        w.write(data)
        with pytest.raises(errdefs.FailedPrecondition) as exc:
            w.commit(len(data) + 1, Digest.from_bytes(data))
        assert "failed size validation" in str(exc.value)
        assert f"{len(data)} != {len(data) + 1}" in str(exc.value)
        assert store.status("badsize").offset == len(data)
        with pytest.raises(errdefs.NotFound):
            store.info(Digest.from_bytes(data))

    def test_commit_with_wrong_digest_keeps_the_ingest(self, store: Store) -> None:
        data = blob(5000, seed=17)
        wrong = Digest.from_bytes(b"wrong")
        w = store.writer("baddigest")
        w.write(data)
        with pytest.raises(errdefs.FailedPrecondition) as exc:
            w.commit(len(data), wrong)
        assert f"unexpected commit digest {Digest.from_bytes(data)}, expected {wrong}" in str(
            exc.value
        )
        assert store.status("baddigest").offset == len(data)
        with pytest.raises(errdefs.NotFound):
            store.info(wrong)

    def test_commit_error_states_then_a_fresh_writer_commits(self, store: Store) -> None:
        # containerd's checkCommitErrorState: two failed commits, then the right one.
        data = blob(8000, seed=18)
        w = store.writer("errstate")
        w.write(data)
        with pytest.raises(errdefs.FailedPrecondition):
            w.commit(len(data) - 1, Digest.from_bytes(data))
        with pytest.raises(errdefs.FailedPrecondition):
            w.write(b"x")  # the failed commit closed the writer
        w = store.writer("errstate")
        with pytest.raises(errdefs.FailedPrecondition):
            w.commit(len(data), Digest.from_bytes(data[:-1]))
        w = store.writer("errstate")
        info = w.commit(len(data), Digest.from_bytes(data))
        assert info.digest == Digest.from_bytes(data)
        assert self.read_all(store, info.digest) == data

    def test_commit_on_closed_writer_is_failed_precondition(self, store: Store) -> None:
        w = store.writer("closed")
        w.write(b"abc")
        w.close()
        with pytest.raises(errdefs.FailedPrecondition):
            w.commit(3, Digest.from_bytes(b"abc"))
        assert store.status("closed").offset == 3

    @requires(DIGEST_ALGORITHMS)
    def test_commit_with_another_algorithm(self, store: Store) -> None:
        data = blob(3000, seed=19)
        d512 = Digest.from_bytes(data, "sha512")
        with store.writer("sha512", Descriptor(d512, len(data))) as w:
            w.write(data)
            info = w.commit(len(data), d512)
        assert info.digest == d512
        assert self.read_all(store, d512) == data

    # labels ----------------------------------------------------------------------------
    def test_commit_labels_are_recorded(self, store: Store) -> None:
        info = self.ingest(store, blob(100, seed=20), "labelled", a="1", b="2")
        assert dict(info.labels) == {"a": "1", "b": "2"}
        assert dict(store.info(info.digest).labels) == {"a": "1", "b": "2"}

    def test_update_labels_with_fieldpaths(self, store: Store) -> None:
        info = self.ingest(store, blob(100, seed=21), "upd", a="1", b="2", c="3")
        new = Info(info.digest, 0, info.created_at, info.updated_at, {"a": "10", "b": "", "z": "9"})
        got = store.update(new, "labels.a", "labels.b")
        assert dict(got.labels) == {"a": "10", "c": "3"}  # b deleted, z not in the paths
        assert got.created_at == info.created_at
        assert got.updated_at >= info.updated_at
        assert store.info(info.digest) == got

    def test_update_labels_replaces_all(self, store: Store) -> None:
        info = self.ingest(store, blob(100, seed=22), "repl", a="1", b="2")
        new = Info(info.digest, 0, info.created_at, info.updated_at, {"x": "1", "y": ""})
        assert dict(store.update(new, "labels").labels) == {"x": "1"}
        assert dict(store.update(new).labels) == {"x": "1"}  # no paths: replace all
        empty = Info(info.digest, 0, info.created_at, info.updated_at, {})
        assert dict(store.update(empty, "labels").labels) == {}

    def test_update_rejects_other_fieldpaths(self, store: Store) -> None:
        info = self.ingest(store, blob(100, seed=23), "otherpath", a="1")
        with pytest.raises(errdefs.InvalidArgument) as exc:
            store.update(info, "size")
        assert 'cannot update "size" field' in str(exc.value)
        assert dict(store.info(info.digest).labels) == {"a": "1"}

    def test_update_of_missing_content_is_not_found(self, store: Store) -> None:
        missing = Digest.from_bytes(b"missing")
        now = datetime.now(UTC)
        with pytest.raises(errdefs.NotFound):
            store.update(Info(missing, 0, now, now, {"a": "1"}), "labels.a")

    def test_label_size_limit(self, store: Store) -> None:
        info = self.ingest(store, blob(100, seed=24), "limit")
        fits = {"k": "v" * 4095}  # key + value = 4096 bytes
        assert (
            dict(
                store.update(
                    Info(info.digest, 0, info.created_at, info.updated_at, fits), "labels.k"
                ).labels
            )
            == fits
        )
        over = {"k": "v" * 4096}
        with pytest.raises(errdefs.InvalidArgument) as exc:
            store.update(Info(info.digest, 0, info.created_at, info.updated_at, over), "labels.k")
        assert "greater than maximum size (4096 bytes)" in str(exc.value)
        assert dict(store.info(info.digest).labels) == fits

    def test_oversize_commit_labels_are_refused_and_the_ingest_kept(self, store: Store) -> None:
        data = blob(100, seed=25)
        w = store.writer("biglabel")
        w.write(data)
        with pytest.raises(errdefs.InvalidArgument):
            w.commit(len(data), Digest.from_bytes(data), {"k" * 4000: "v" * 100})
        with pytest.raises(errdefs.NotFound):
            store.info(Digest.from_bytes(data))
        with store.writer("biglabel") as w:
            assert w.status().offset == len(data)

    # small blobs -------------------------------------------------------------------------
    @pytest.mark.parametrize("size", [0, 1, 2, 7, 64, 4095, 4097])
    def test_small_blobs(self, store: Store, size: int) -> None:
        data = blob(size, seed=size)
        info = self.ingest(store, data, f"small-{size}")
        assert info.size == size
        assert self.read_all(store, info.digest) == data
        if size == 0:
            assert info.digest == EMPTY

    # truncate ----------------------------------------------------------------------------
    def test_truncate_only_to_zero(self, store: Store) -> None:
        with store.writer("trunc") as w:
            w.write(b"abcdef")
            with pytest.raises(errdefs.InvalidArgument):
                w.truncate(3)
            assert w.status().offset == 6
            w.truncate(0)
            assert (w.status().offset, w.digest()) == (0, EMPTY)
            w.write(b"xyz")
            info = w.commit(3, Digest.from_bytes(b"xyz"))
        assert self.read_all(store, info.digest) == b"xyz"

    def test_truncate_is_visible_in_status(self, store: Store) -> None:
        with store.writer("trunc-status") as w:
            w.write(b"x" * 5000)
            w.truncate(0)
            assert store.status("trunc-status").offset == 0

    # abort -----------------------------------------------------------------------------
    def test_abort_removes_the_ingest(self, store: Store) -> None:
        w = store.writer("abort-me")
        w.write(b"partial")
        w.close()
        store.abort("abort-me")
        with pytest.raises(errdefs.NotFound):
            store.status("abort-me")
        assert store.list_statuses() == []
        with store.writer("abort-me") as w:
            assert w.status().offset == 0

    def test_abort_unknown_ref_is_not_found(self, store: Store) -> None:
        with pytest.raises(errdefs.NotFound):
            store.abort("never-started")

    @requires(ABORT_HELD)
    def test_abort_while_writing_is_unavailable(self, store_factory: StoreFactory) -> None:
        one, two = store_factory(), store_factory()
        with one.writer("abort-busy") as w:
            w.write(b"data")
            with pytest.raises(errdefs.Unavailable):
                two.abort("abort-busy")
            assert two.status("abort-busy").offset == 4

    # list_statuses -----------------------------------------------------------------------
    def test_list_statuses_with_ref_filters(self, store: Store) -> None:
        refs = ["layer-sha256:aaa", "layer-sha256:bbb", "config-sha256:ccc"]
        for ref in refs:
            w = store.writer(ref)
            w.write(ref.encode())
            w.close()

        def listed(*filters: str) -> list[str]:
            return sorted(s.ref for s in store.list_statuses(*filters))

        assert listed() == sorted(refs)
        assert listed("") == sorted(refs)
        assert listed("ref==layer-sha256:aaa") == ["layer-sha256:aaa"]
        assert listed('ref=="config-sha256:ccc"') == ["config-sha256:ccc"]
        assert listed("ref~=^layer-") == ["layer-sha256:aaa", "layer-sha256:bbb"]
        assert listed("ref~=/b+$/") == ["layer-sha256:bbb"]
        assert listed("ref!=layer-sha256:aaa") == ["config-sha256:ccc", "layer-sha256:bbb"]
        assert listed("ref==config-sha256:ccc", "ref==layer-sha256:aaa") == [
            "config-sha256:ccc",
            "layer-sha256:aaa",
        ]
        assert listed("ref~=layer,ref~=aaa") == ["layer-sha256:aaa"]
        assert listed("ref") == sorted(refs)
        assert listed("digest") == []
        with pytest.raises(errdefs.InvalidArgument) as exc:
            store.list_statuses("ref=")
        assert "filters: parse error" in str(exc.value)
        st = {s.ref: s for s in store.list_statuses()}
        assert st["layer-sha256:bbb"].offset == len(b"layer-sha256:bbb")

    # walk ------------------------------------------------------------------------------
    def test_walk_with_filters(self, store: Store) -> None:
        a = self.ingest(
            store, blob(10, seed=30), "a", **{"kind": "layer", "containerd.io/gc.root": "x"}
        )
        b = self.ingest(store, blob(11, seed=31), "b", kind="config")
        c = self.ingest(store, blob(12, seed=32), "c")

        def walked(*filters: str) -> set[Digest]:
            return {i.digest for i in store.walk(*filters)}

        assert walked() == {a.digest, b.digest, c.digest}
        assert walked("") == {a.digest, b.digest, c.digest}
        assert walked(f"digest=={a.digest}") == {a.digest}
        assert walked("labels.kind==layer") == {a.digest}
        assert walked("labels.kind") == {a.digest, b.digest}
        assert walked("labels.kind!=layer") == {b.digest, c.digest}
        assert walked('labels."containerd.io/gc.root"') == {a.digest}
        assert walked("labels.kind~=^(lay|conf)") == {a.digest, b.digest}
        assert walked("labels.kind==layer", "labels.kind==config") == {a.digest, b.digest}
        assert walked("labels.kind==layer,digest!=" + str(a.digest)) == set()
        assert walked("size==10") == set()  # containerd does not filter on size
        infos = {i.digest: i for i in store.walk()}
        assert replace(infos[a.digest], updated_at=a.updated_at) == store.info(a.digest)

    @requires(WALK_UPDATED_AT)
    def test_walk_reports_what_info_reports(self, store: Store) -> None:
        info = self.ingest(store, blob(10, seed=33), "walked", kind="layer")
        updated = store.update(replace(info, labels={"kind": "config"}), "labels.kind")
        assert list(store.walk()) == [updated] == [store.info(info.digest)]

    def test_walk_rejects_malformed_filters_at_once(self, store: Store) -> None:
        with pytest.raises(errdefs.InvalidArgument) as exc:
            store.walk("labels.a==x,")
        assert "filters: parse error" in str(exc.value)

    # delete ----------------------------------------------------------------------------
    def test_delete(self, store: Store) -> None:
        info = self.ingest(store, blob(100, seed=40), "del", a="1")
        store.delete(info.digest)
        with pytest.raises(errdefs.NotFound):
            store.info(info.digest)
        with pytest.raises(errdefs.NotFound):
            store.reader_at(info.digest)
        assert list(store.walk()) == []
        with pytest.raises(errdefs.NotFound):
            store.delete(info.digest)
        again = self.ingest(store, blob(100, seed=40), "del-again")
        assert dict(again.labels) == {}  # deleting dropped the labels too

    def test_delete_of_missing_content_is_not_found(self, store: Store) -> None:
        with pytest.raises(errdefs.NotFound):
            store.delete(Digest.from_bytes(b"never"))

    # reader_at -------------------------------------------------------------------------
    def test_ranged_reads(self, store: Store) -> None:
        data = blob(100_000, seed=50)
        info = self.ingest(store, data, "ranged")
        with store.reader_at(Descriptor(info.digest, info.size)) as ra:
            assert ra.size == len(data)
            assert ra.read_at(0, 10) == data[:10]
            assert ra.read_at(12_345, 1000) == data[12_345:13_345]
            assert ra.read_at(99_990, 100) == data[99_990:]  # short at the end
            assert ra.read_at(len(data), 10) == b""
            assert ra.read_at(5, 0) == b""
            with pytest.raises(errdefs.OutOfRange):
                ra.read_at(len(data) + 1, 1)
            with pytest.raises(errdefs.OutOfRange):
                ra.read_at(-1, 1)

    def test_reader_of_missing_content_is_not_found(self, store: Store) -> None:
        with pytest.raises(errdefs.NotFound):
            store.reader_at(Digest.from_bytes(b"absent"))

    def test_info_of_missing_content_is_not_found(self, store: Store) -> None:
        with pytest.raises(errdefs.NotFound) as exc:
            store.info(Digest.from_bytes(b"absent"))
        assert str(Digest.from_bytes(b"absent")) in str(exc.value)

    # several refs, one digest ------------------------------------------------------------
    def test_two_refs_committing_the_same_content(self, store_factory: StoreFactory) -> None:
        one, two = store_factory(), store_factory()
        data = blob(50_000, seed=60)
        w1, w2 = one.writer("same-1"), two.writer("same-2")
        w1.write(data)
        w2.write(data)
        info = w1.commit(len(data), Digest.from_bytes(data))
        with pytest.raises(errdefs.AlreadyExists):
            w2.commit(len(data), Digest.from_bytes(data))
        assert self.read_all(two, info.digest) == data
        assert one.list_statuses() == []
