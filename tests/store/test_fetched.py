"""Fetched records: what a source's bytes became, advisory and bounded."""

from __future__ import annotations

import json
from pathlib import Path

from ingestq.store.digest import Digest
from ingestq.store.fetched import Fetched, FetchedRecords
from ingestq.store.layout import RootLayout

D = Digest.from_bytes(b"x")


def test_a_record_reads_back_for_its_source_only(tmp_path: Path) -> None:
    records = FetchedRecords(tmp_path)
    record = Fetched("http://h/x", D, 1, '"e"', "Wed, 01 May 2024 10:00:00 GMT")
    records.put("source-a", record)
    assert records.get("source-a", "http://h/x") == record
    assert records.get("source-a", "http://h/other") is None
    assert RootLayout(tmp_path).fetched_record("source-a").exists()


def test_a_record_without_a_validator_forgets_the_key(tmp_path: Path) -> None:
    records = FetchedRecords(tmp_path)
    records.put("k", Fetched("s", D, 1, '"e"'))
    records.put("k", Fetched("s", D, 1))
    assert records.get("k", "s") is None
    assert not RootLayout(tmp_path).fetched_record("k").exists()


def test_a_malformed_record_reads_as_none(tmp_path: Path) -> None:
    records = FetchedRecords(tmp_path)
    path = RootLayout(tmp_path).fetched_record("k")
    path.parent.mkdir(parents=True)
    bad = [
        {"source": "s", "digest": "sha256:zz", "size": 1, "etag": "e"},
        {"source": "s", "digest": str(D), "size": -1, "etag": "e"},
        {"source": "s", "digest": str(D), "size": 1},
    ]
    for text in ["{", "[]", *(json.dumps(b) for b in bad)]:
        path.write_text(text)
        assert records.get("k", "s") is None
