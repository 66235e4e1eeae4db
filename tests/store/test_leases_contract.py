"""The lease contract (:mod:`ingestq.store.testing.leases_contract`) run against the
local store's leases (one JSON file per namespace under the root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestq.store import LocalStore
from ingestq.store.testing.leases_contract import LeasesContract, LeasesFactory


class TestLocalLeasesContract(LeasesContract):
    @pytest.fixture
    def leases_factory(self, tmp_path: Path) -> LeasesFactory:
        return lambda: LocalStore(tmp_path / "store", fsync=False).leases()
