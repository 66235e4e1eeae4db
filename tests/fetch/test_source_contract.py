"""The source contract (:mod:`ingestq.fetch.testing`) run against every source ingestq
ships: the HTTP source on a real HTTP server on 127.0.0.1, the registry blob source on
a real ``docker-registry``, the OCI-layout source and the file source."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ingestq.fetch.files import FileSource
from ingestq.fetch.http import HttpSource
from ingestq.fetch.httpio import new_client
from ingestq.fetch.ocilayout import OCILayoutImage
from ingestq.fetch.reference import parse_reference
from ingestq.fetch.registry.client import RegistryBlobSource, RegistryClient
from ingestq.fetch.source import Source
from ingestq.fetch.testing import SourceContract, SourceFactory, ValidatedSourceContract
from ingestq.store.digest import Digest
from ingestq.store.values import Descriptor
from tests.servers import oci
from tests.servers.registry import Registry, running_registry
from tests.tasks.blobserver import Behaviour, BlobServer

_names = itertools.count()
LAYER = "application/vnd.oci.image.layer.v1.tar"


class _Http:
    def __init__(self, server: BlobServer, client: httpx.Client) -> None:
        self._server, self._client = server, client

    def source(self, data: bytes) -> Source:
        return HttpSource(
            self._server.add(f"/blob-{next(_names)}", Behaviour(data=data)), self._client
        )

    def missing(self) -> Source:
        return HttpSource(f"{self._server.url}/never-served", self._client)

    def replace(self, source: Source, data: bytes) -> None:
        path = source.name.removeprefix(self._server.url)
        self._server.add(path, Behaviour(data=data))


@pytest.fixture(scope="module")
def contract_server() -> Iterator[BlobServer]:
    """One HTTP server for every test of the HTTP contract (each test adds its paths)."""
    server = BlobServer().start()
    try:
        yield server
    finally:
        server.stop()


class TestHttpSourceContract(ValidatedSourceContract):
    @pytest.fixture
    def source_factory(self, contract_server: BlobServer) -> Iterator[SourceFactory]:
        with new_client(connect_timeout=5, read_timeout=10) as client:
            yield _Http(contract_server, client)


class _Registry:
    def __init__(self, registry: Registry, client: RegistryClient) -> None:
        self._ref = parse_reference(f"{registry.host}/contract")
        self._registry, self._client = registry, client

    def source(self, data: bytes) -> Source:
        digest = Digest.parse(oci.push_blob(self._registry, "contract", data))
        return RegistryBlobSource(self._client, self._ref, Descriptor(digest, len(data), LAYER))

    def missing(self) -> Source:
        absent = Descriptor(Digest.from_bytes(b"never pushed"), 12, LAYER)
        return RegistryBlobSource(self._client, self._ref, absent)

    def replace(self, source: Source, data: bytes) -> None:
        raise NotImplementedError("registry blobs are content-addressed")


@pytest.fixture(scope="module")
def contract_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One registry for every test of the registry contract."""
    with running_registry(tmp_path_factory.mktemp("contract-registry")) as registry:
        yield registry


class TestRegistryBlobSourceContract(SourceContract):
    @pytest.fixture
    def source_factory(self, contract_registry: Registry) -> Iterator[SourceFactory]:
        with RegistryClient() as client:
            yield _Registry(contract_registry, client)


class _Layout:
    def __init__(self, root: Path) -> None:
        self._root = root

    def _image(self, tag: str) -> OCILayoutImage:
        return OCILayoutImage(f"oci-layout:{self._root / 'layout'}:{tag}", roots=[self._root])

    def source(self, data: bytes) -> Source:
        tag = f"v{next(_names)}"
        oci.make_oci_layout(self._root / "layout", tag, [data])
        return self._image(tag).blob_source(Descriptor(Digest.from_bytes(data), len(data)))

    def missing(self) -> Source:
        oci.make_oci_layout(self._root / "layout", "other", [b"other"])
        absent = Descriptor(Digest.from_bytes(b"not in the layout"), 17)
        return self._image("other").blob_source(absent)

    def replace(self, source: Source, data: bytes) -> None:
        path = Path(source.name)
        path.chmod(0o644)
        path.write_bytes(data)


class TestOCILayoutSourceContract(ValidatedSourceContract):
    @pytest.fixture
    def source_factory(self, tmp_path: Path) -> SourceFactory:
        return _Layout(tmp_path)


class _Files:
    def __init__(self, root: Path) -> None:
        self._root = root

    def source(self, data: bytes) -> Source:
        path = self._root / f"file-{next(_names)}"
        path.write_bytes(data)
        return FileSource(path, [self._root])

    def missing(self) -> Source:
        return FileSource(self._root / "absent", [self._root])

    def replace(self, source: Source, data: bytes) -> None:
        fresh = Path(f"{source.name}.new")
        fresh.write_bytes(data)
        os.replace(fresh, source.name)


class TestFileSourceContract(ValidatedSourceContract):
    @pytest.fixture
    def source_factory(self, tmp_path: Path) -> SourceFactory:
        return _Files(tmp_path)
