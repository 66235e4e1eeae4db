"""Lease records (store.leases): per-namespace persistence under the root's leases/,
shared by every LeaseStore on the root (threads and processes), expiry, resources and
total decoding. The gRPC side is tested in tests/api/test_services.py."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.store.layout import RootLayout
from ingestq.store.leases import EXPIRE_LABEL, LeaseRecord, LeaseStore, validate_resource


@pytest.fixture
def leases(tmp_path: Path) -> LeaseStore:
    return LeaseStore(tmp_path)


def test_create_get_list_delete(leases: LeaseStore, tmp_path: Path) -> None:
    a = leases.create("default", "a", {"k": "v"})
    assert (a.id, dict(a.labels), a.resources) == ("a", {"k": "v"}, ())
    generated = leases.create("default", "", {})
    assert generated.id and generated.id != "a"
    assert leases.get("default", "a") == a
    assert sorted(x.id for x in leases.list("default")) == sorted(["a", generated.id])
    assert [x.id for x in leases.list("default", "labels.k==v")] == ["a"]
    assert [x.id for x in leases.list("default", "id==a")] == ["a"]
    assert leases.list("other") == []  # per namespace
    with pytest.raises(errdefs.AlreadyExists, match='lease "a"'):
        leases.create("default", "a", {})
    leases.delete("default", "a")
    with pytest.raises(errdefs.NotFound, match='lease "a"'):
        leases.get("default", "a")
    with pytest.raises(errdefs.NotFound):
        leases.delete("default", "a")
    assert leases.namespaces() == ["default"]
    assert list((tmp_path / "locks").iterdir()) == []  # lock files go with their lock


def test_records_are_shared_by_every_lease_store_on_the_root(tmp_path: Path) -> None:
    LeaseStore(tmp_path).create("ns1", "x", {"a": "b"})
    other = LeaseStore(tmp_path)
    assert other.get("ns1", "x").labels == {"a": "b"}
    raw = json.loads(RootLayout(tmp_path).lease_file("ns1").read_text())
    assert raw["x"]["labels"] == {"a": "b"} and raw["x"]["resources"] == []


def test_concurrent_creates_lose_nothing(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)

    def create(i: int) -> None:
        barrier.wait(30)
        for j in range(10):
            LeaseStore(tmp_path).create("default", f"{i}-{j}", {})

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(LeaseStore(tmp_path).list("default")) == 80


def test_resources(leases: LeaseStore) -> None:
    leases.create("default", "r", {})
    leases.add_resource("default", "r", "ingests", "layer-1")
    leases.add_resource("default", "r", "content", "sha256:abc")
    leases.add_resource("default", "r", "content", "sha256:abc")  # idempotent
    assert leases.resources("default", "r") == (
        ("ingests", "layer-1"),
        ("content", "sha256:abc"),
    )
    leases.delete_resource("default", "r", "ingests", "layer-1")
    leases.delete_resource("default", "r", "ingests", "never")  # absent is fine
    assert leases.resources("default", "r") == (("content", "sha256:abc"),)
    with pytest.raises(errdefs.NotFound):
        leases.add_resource("default", "missing", "content", "x")
    with pytest.raises(errdefs.InvalidArgument):
        leases.add_resource("default", "r", "containers", "x")
    validate_resource("snapshots/overlayfs", "key")
    with pytest.raises(errdefs.InvalidArgument):
        validate_resource("snapshots/", "key")
    with pytest.raises(errdefs.InvalidArgument):
        validate_resource("content", "")


def test_expired_leases_are_dropped(leases: LeaseStore) -> None:
    now = datetime.now(UTC)
    past = (now - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    future = (now + timedelta(hours=1)).isoformat()
    leases.create("default", "old", {EXPIRE_LABEL: past})
    leases.create("default", "new", {EXPIRE_LABEL: future})
    leases.create("default", "odd", {EXPIRE_LABEL: "not a time"})
    assert sorted(x.id for x in leases.list("default")) == ["new", "odd"]
    naive = LeaseRecord("n", now, {EXPIRE_LABEL: "2000-01-01T00:00:00"})
    assert naive.expired(now)


def test_bad_namespaces_labels_and_records(leases: LeaseStore, tmp_path: Path) -> None:
    for ns in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(errdefs.InvalidArgument):
            leases.create(ns, "x", {})
    with pytest.raises(errdefs.InvalidArgument):
        leases.create("default", "big", {"k": "v" * 5000})
    path = RootLayout(tmp_path).lease_file("default")
    for garbage in ("{", '["x"]', '{"x": {"labels": {}}}', '{"x": 5}'):
        path.write_text(garbage)
        with pytest.raises(errdefs.DataLoss):
            leases.list("default")
