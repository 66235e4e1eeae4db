"""Don't fetch what you already have: a URL ingested without a digest is remembered
with its validators, a re-run asks the server "only if changed", and a second ingest
that waited for the first takes the first's blob (a real HTTP server, real processes)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ingestq.fetch import httpio
from ingestq.fetch.http import HttpSource
from ingestq.fetch.refkey import source_ref
from ingestq.ingest.request import make_request
from ingestq.ingest.wait import ingest
from ingestq.jobs.api import JobState
from ingestq.jobs.config import Settings
from ingestq.jobs.local import LocalClient
from ingestq.store.digest import Digest
from ingestq.store.fetched import FetchedRecords
from ingestq.store.local import LocalStore
from ingestq.store.values import Info
from tests.jobs.test_local_ingest import CLI, cli, embedded_env
from tests.servers.util import wait_until
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.workers import REPO

MiB = 1 << 20
MODIFIED = "Wed, 01 May 2024 10:00:00 GMT"


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpio.new_client() as c:
        yield c


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store", fsync=False)


def url_ingest(store: LocalStore, client: httpx.Client, url: str) -> tuple[Info, bool]:
    request = make_request({"type": "http", "url": url}, url)
    result = ingest(store, HttpSource(url, client), request)
    return result.info, result.fetched


def test_a_rerun_is_one_conditional_request_answered_304_without_a_body(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    b = Behaviour(data=os.urandom(3 * MiB))
    url = blob_server.add("/blob", b)
    first, fetched = url_ingest(store, client, url)
    assert fetched and str(first.digest) == b.digest
    record = FetchedRecords(store.root).get(source_ref(url), url)
    assert record is not None and record.etag == b.etag and str(record.digest) == b.digest

    again, fetched = url_ingest(store, client, url)
    assert not fetched and again.digest == first.digest
    requests = blob_server.requests_for("/blob")
    assert [r.status for r in requests] == [200, 304]
    assert requests[1].if_none_match == b.etag and requests[1].sent == 0
    assert blob_server.bytes_served("/blob") == len(b.data)
    assert list(store.list_statuses()) == []  # the empty ingest of the re-run is gone


def test_last_modified_alone_is_asked_with_if_modified_since(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    b = Behaviour(data=os.urandom(MiB), etag="", last_modified=MODIFIED)
    url = blob_server.add("/blob", b)
    url_ingest(store, client, url)
    _, fetched = url_ingest(store, client, url)
    assert not fetched
    requests = blob_server.requests_for("/blob")
    assert [r.status for r in requests] == [200, 304]
    assert requests[1].if_modified_since == MODIFIED and requests[1].if_none_match is None


def test_a_changed_resource_is_downloaded_again_and_gives_the_new_digest(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    url = blob_server.add("/blob", Behaviour(data=os.urandom(MiB)))
    old, _ = url_ingest(store, client, url)
    changed = Behaviour(data=os.urandom(MiB))
    blob_server.add("/blob", changed)

    new, fetched = url_ingest(store, client, url)
    assert fetched and str(new.digest) == changed.digest != str(old.digest)
    assert [r.status for r in blob_server.requests_for("/blob")] == [200, 200]
    record = FetchedRecords(store.root).get(source_ref(url), url)
    assert record is not None and record.etag == changed.etag and record.digest == new.digest


def test_a_record_whose_blob_was_deleted_fetches_normally(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    b = Behaviour(data=os.urandom(MiB))
    url = blob_server.add("/blob", b)
    url_ingest(store, client, url)
    store.delete(Digest.parse(b.digest))

    info, fetched = url_ingest(store, client, url)
    assert fetched and str(info.digest) == b.digest and store.exists(info.digest)
    requests = blob_server.requests_for("/blob")
    assert [r.status for r in requests] == [200, 200]
    assert requests[1].if_none_match is None  # not asked conditionally


def test_two_processes_ingesting_one_url_download_it_once(
    blob_server: BlobServer, tmp_path: Path
) -> None:
    b = Behaviour(data=os.urandom(2 * MiB), gate_offset=MiB)
    url = blob_server.add("/blob", b)
    env = embedded_env(tmp_path / "store")
    first = cli(env, "ingest", url, "--json", "--job-id", "job-1")
    assert b.gate_reached.wait(30)
    second = cli(env, "ingest", url, "--json", "--job-id", "job-2")
    job2 = LocalClient(Settings.from_env(env)).job("job-2")
    wait_until(lambda: job2.state is JobState.RETRYING, 30, "the second process waits")
    b.gate.set()

    out1, err1 = first.communicate(timeout=60)
    out2, err2 = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert json.loads(out1)["digest"] == json.loads(out2)["digest"] == b.digest
    assert blob_server.count("/blob", 200) == 1
    assert [r.status for r in blob_server.requests_for("/blob")] == [200, 304]
    assert blob_server.bytes_served("/blob") == len(b.data)

    rerun = subprocess.run(
        [*CLI, "ingest", url], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert rerun.returncode == 0 and rerun.stdout.strip() == b.digest, rerun.stderr
    assert blob_server.count("/blob", 200) == 1 and blob_server.count("/blob", 304) == 2
