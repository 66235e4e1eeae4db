"""The store contract (:mod:`ingestq.store.testing.contract`) run against
:class:`api.client.GrpcStore` over a real ingestq gRPC server (in-process, real unix
socket, real gRPC)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ingestq.api.client import GrpcWriter
from ingestq.store import Writer
from ingestq.store.testing.contract import ALL_CAPABILITIES, HOLDER, StoreContract, StoreFactory
from tests.api.conftest import Served


def cancel_stream(writer: Writer) -> None:
    """What a client that dies mid-write leaves: the stream cancelled, no COMMIT. The
    server keeps the data and frees the ref once the cancellation arrives."""
    assert isinstance(writer, GrpcWriter)
    writer._responses.cancel()  # type: ignore[attr-defined]
    writer.close()


class TestGrpcStoreContract(StoreContract):
    #: The content API has no field for the holder of a ref.
    capabilities = ALL_CAPABILITIES - {HOLDER}

    @pytest.fixture
    def store_factory(self, api_server: Served) -> Iterator[StoreFactory]:
        yield api_server.client

    def crash(self, writer: Writer) -> None:
        cancel_stream(writer)
