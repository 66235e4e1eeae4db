"""The store contract (:mod:`ingestq.store.testing.contract`) run against LocalStore:
with and without fsync, with a crash that leaves what SIGKILL leaves (an unsealed data
file), and with the Redis lease locker chained behind the file locks (a real
redis-server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestq.store import LocalStore, Writer
from ingestq.store.local import LocalWriter
from ingestq.store.testing.contract import KNOWN_CAPABILITIES, StoreContract, StoreFactory
from ingestq.tasks.lease import RedisLeaseLocker


class TestLocalStoreContract(StoreContract):
    capabilities = KNOWN_CAPABILITIES

    @pytest.fixture(params=[False, True], ids=["nofsync", "fsync"])
    def store_factory(
        self, tmp_path: Path, request: pytest.FixtureRequest
    ) -> Iterator[StoreFactory]:
        root = tmp_path / "store"
        yield lambda: LocalStore(root, fsync=request.param)
        assert_no_stray_files(root)

    def crash(self, writer: Writer) -> None:
        """What a SIGKILL leaves: the descriptor gone, the file unsealed, the lock free."""
        assert isinstance(writer, LocalWriter)
        fd = writer._fd
        assert fd is not None
        os.close(fd)
        writer._fd = None
        writer.lease.release()


class TestLocalStoreWithRedisLeasesContract(TestLocalStoreContract):
    """Every handle chains its own Redis lease locker (as another worker host would)
    behind the host's file locks."""

    @pytest.fixture
    def store_factory(self, tmp_path: Path, redis_url: str) -> Iterator[StoreFactory]:
        root = tmp_path / "store"
        yield lambda: LocalStore(root, [RedisLeaseLocker(redis_url, ttl=10.0)], fsync=False)
        assert_no_stray_files(root)


def assert_no_stray_files(root: Path) -> None:
    """Nothing but the layout may be left: no temp files, no lock files of released locks."""
    allowed_top = {"blobs", "ingest", "locks", "meta", "oci-layout", "index.json", "quarantine"}
    assert {p.name for p in root.iterdir()} <= allowed_top
    assert not [p for p in root.rglob("*.tmp")], "temporary files left behind"
    assert [p.name for p in (root / "locks").iterdir()] == [], "lock files left behind"
