"""The store contract (:mod:`ingestq.store.testing.contract`) run against MemoryStore,
with its own locker and with a FakeRefLocker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ingestq.store.memory import MemoryStore
from ingestq.store.testing import FakeRefLocker
from ingestq.store.testing.contract import KNOWN_CAPABILITIES, StoreContract, StoreFactory


class TestMemoryStoreContract(StoreContract):
    capabilities = KNOWN_CAPABILITIES

    @pytest.fixture(params=["memory-locker", "fake-locker"])
    def store_factory(self, request: pytest.FixtureRequest) -> Iterator[StoreFactory]:
        store = MemoryStore(FakeRefLocker() if request.param == "fake-locker" else None)
        yield lambda: store
