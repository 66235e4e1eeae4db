"""The store contract (tests/store/contract.py) run against :class:`api.client.GrpcStore`
over a real ingestq gRPC server (in-process, real unix socket, real gRPC)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ingestq.store import Writer
from tests.api.conftest import Served
from tests.store.contract import StoreContract, StoreFactory


class TestGrpcStoreContract(StoreContract):
    @pytest.fixture
    def store_factory(self, api_server: Served) -> Iterator[StoreFactory]:
        yield api_server.client

    def crash(self, writer: Writer) -> None:
        """What a client that dies mid-write leaves: the stream cancelled, no COMMIT.
        The server keeps the data and frees the ref once the cancellation arrives."""
        writer._responses.cancel()  # type: ignore[attr-defined]
        writer.close()
