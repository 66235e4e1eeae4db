"""The store contract (:mod:`ingestq.store.testing.contract`) run against a REAL
containerd daemon through :class:`api.client.GrpcStore`: the same client, the same
tests as against ``ingestq serve`` (tests/api/test_client_contract.py), without the
capabilities that are ingestq's own (the contract module's docstring lists them and
every other difference).

Each test gets a fresh daemon (it starts in a fraction of a second) with the garbage
collector off, so content written without a lease stays for the test's assertions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestq.api.client import GrpcStore
from ingestq.store import Writer
from ingestq.store.testing.contract import StoreContract, StoreFactory
from tests.api.test_client_contract import cancel_stream
from tests.servers.containerd import running_containerd


class TestContainerdContract(StoreContract):
    capabilities = frozenset()

    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> Iterator[StoreFactory]:
        clients: list[GrpcStore] = []

        def make() -> GrpcStore:
            clients.append(GrpcStore(f"unix://{daemon.address}", "default"))
            return clients[-1]

        with running_containerd(tmp_path / "containerd", gc=False) as daemon:
            yield make
            for c in clients:
                c.close()

    def crash(self, writer: Writer) -> None:
        cancel_stream(writer)
