"""The contract every job record store owes (:class:`ingestq.jobs.records.JobRecordStore`),
shipped with the package so a new store can prove itself.

How a store plugs in: subclass :class:`JobRecordStoreContract` in a ``test_*.py``
module (pytest collects classes named ``Test*``) and provide a ``records`` fixture
giving a fresh, empty store; override :meth:`JobRecordStoreContract.reopen` to give a
second handle on the *same* store (what another process sees; default: the same
object)::

    class TestMyRecords(JobRecordStoreContract):
        @pytest.fixture
        def records(self, tmp_path) -> JobRecordStore:
            return MyRecords(tmp_path)

        def reopen(self, records: JobRecordStore) -> JobRecordStore:
            return MyRecords(records.root)

The contract uses only the protocol's methods and imports nothing but the standard
library and ``ingestq.jobs``; it needs pytest only to be run.
"""

from __future__ import annotations

import json
import threading
import time

from ingestq import errdefs
from ingestq.jobs.records import JobRecordStore, error_from_text, error_text

#: Values that must come back exactly as written.
ODD_VALUES = ("", " ", "ünïcødé ✓", "line\nbreak", '{"json": [1, 2]}', "x" * 10_000)
#: Job ids that must work: a uuid, plain names, and ones that are not file names.
ODD_IDS = (
    "0e1f1d6c-5a6b-4a5e-9a0c-2d3e4f5a6b7c",
    "job-1",
    "a/b/../c",
    "with space",
    "é" * 3,
    "y" * 300,
)


class JobRecordStoreContract:
    """The contract tests. Subclasses provide the ``records`` fixture (module doc)."""

    def reopen(self, records: JobRecordStore) -> JobRecordStore:
        """Another handle on the store behind ``records`` (default: ``records``)."""
        return records

    def test_an_unknown_job_has_an_empty_record(self, records: JobRecordStore) -> None:
        assert records.get("nobody") == {}
        assert not records.cancel_requested("nobody")

    def test_create_records_the_fields_and_created_at(self, records: JobRecordStore) -> None:
        assert records.create("j1", {"ref": "r", "source": "s"}) == ("j1", True)
        got = records.get("j1")
        assert got["ref"] == "r" and got["source"] == "s"
        assert float(got["created_at"]) > 0
        assert set(got) == {"ref", "source", "created_at"}

    def test_create_of_an_existing_id_changes_nothing(self, records: JobRecordStore) -> None:
        records.create("j1", {"ref": "first"})
        assert records.create("j1", {"ref": "second"}) == ("j1", False)
        assert records.get("j1")["ref"] == "first"

    def test_an_idempotency_key_maps_to_the_first_job(self, records: JobRecordStore) -> None:
        assert records.create("a", {"ref": "1"}, "key") == ("a", True)
        assert records.create("b", {"ref": "2"}, "key") == ("a", False)
        assert records.create("a", {"ref": "3"}, "key") == ("a", False)
        assert records.get("b") == {}
        assert records.get("a")["ref"] == "1"
        assert records.create("c", {"ref": "4"}, "other key") == ("c", True)

    def test_update_merges_fields(self, records: JobRecordStore) -> None:
        records.create("j1", {"ref": "r", "state": "queued"})
        records.update("j1", {"state": "started", "plan": "{}"})
        records.update("j1", {"reason": "waiting"})
        got = records.get("j1")
        assert (got["ref"], got["state"], got["plan"], got["reason"]) == (
            "r", "started", "{}", "waiting",
        )  # fmt: skip

    def test_update_of_an_unknown_job_records_just_its_fields(
        self, records: JobRecordStore
    ) -> None:
        records.update("late", {"error": "x"})
        assert records.get("late") == {"error": "x"}

    def test_get_returns_a_copy(self, records: JobRecordStore) -> None:
        records.create("j1", {"ref": "r"})
        got = records.get("j1")
        got["ref"] = "changed"
        assert records.get("j1")["ref"] == "r"

    def test_values_round_trip_exactly(self, records: JobRecordStore) -> None:
        fields = {f"f{i}": value for i, value in enumerate(ODD_VALUES)}
        records.create("odd", fields)
        got = records.get("odd")
        assert {k: got[k] for k in fields} == fields

    def test_ids_that_are_not_file_names_work(self, records: JobRecordStore) -> None:
        for i, job_id in enumerate(ODD_IDS):
            assert records.create(job_id, {"n": str(i)}) == (job_id, True)
        for i, job_id in enumerate(ODD_IDS):
            assert records.get(job_id)["n"] == str(i)
            assert not records.cancel_requested(job_id)

    def test_cancel_flags_are_per_job_and_survive_updates(self, records: JobRecordStore) -> None:
        records.create("j1", {"ref": "r"})
        records.create("j2", {"ref": "r"})
        assert not records.cancel_requested("j1")
        records.request_cancel("j1")
        records.update("j1", {"state": "started"})
        assert records.cancel_requested("j1")
        assert not records.cancel_requested("j2")
        records.request_cancel("j1")  # idempotent
        assert records.cancel_requested("j1")

    def test_error_records_round_trip(self, records: JobRecordStore) -> None:
        err = errdefs.NotFound("blob x", {"ref": "layer-1"})
        records.create("j1", {"error": error_text(err)})
        back = error_from_text(records.get("j1")["error"])
        assert type(back) is errdefs.NotFound and str(back) == str(err)
        assert back.details == {"ref": "layer-1"}
        assert json.loads(records.get("j1")["error"])["code"] == 5

    def test_another_handle_sees_the_same_records(self, records: JobRecordStore) -> None:
        other_records = self.reopen(records)
        records.create("j1", {"ref": "r"}, "key")
        assert other_records.get("j1")["ref"] == "r"
        assert other_records.create("j2", {}, "key") == ("j1", False)
        other_records.request_cancel("j1")
        assert records.cancel_requested("j1")

    def test_list_gives_created_jobs_newest_first(self, records: JobRecordStore) -> None:
        assert records.list() == []
        for job_id in ("old", "mid", "new"):
            records.create(job_id, {"ref": job_id})
            # creation times must differ: wait for the clock instead of sleeping blindly
            created = float(records.get(job_id)["created_at"])
            while time.time() <= created:
                time.sleep(0.001)
        records.update("mid", {"state": "started"})
        listed = records.list()
        assert [job_id for job_id, _ in listed] == ["new", "mid", "old"]
        assert dict(listed)["mid"]["state"] == "started"
        assert dict(listed)["old"] == records.get("old")
        assert [job_id for job_id, _ in records.list(limit=2)] == ["new", "mid"]
        assert self.reopen(records).list(limit=1)[0][0] == "new"

    def test_list_names_ids_that_are_not_file_names(self, records: JobRecordStore) -> None:
        for job_id in ODD_IDS:
            records.create(job_id, {})
        assert {job_id for job_id, _ in records.list()} == set(ODD_IDS)

    def test_concurrent_creates_of_one_id_create_it_once(self, records: JobRecordStore) -> None:
        results: list[bool] = []
        mutex = threading.Lock()
        start = threading.Barrier(8)

        def create(n: int) -> None:
            start.wait()
            _, created = records.create("race", {"n": str(n)})
            with mutex:
                results.append(created)

        threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False] * 7 + [True]
        assert records.get("race")["n"] in {str(n) for n in range(8)}


__all__ = ["ODD_IDS", "ODD_VALUES", "JobRecordStoreContract"]
