"""TLS failures are permanent from the HTTP source, exactly as from the registry source:
``https://`` to a real plain-HTTP server and a real TLS server whose certificate is not
trusted both give FailedPrecondition at once (not an Unavailable that a worker would
retry for minutes)."""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.fetch.http import HttpSource
from ingestq.fetch.httpio import RAW_BODY_MIN, SystemTrustContext, new_client, ssl_context
from ingestq.fetch.options import FetchOptions
from ingestq.fetch.reference import parse_reference
from ingestq.fetch.registry.client import RegistryClient, RegistryOptions
from ingestq.fetch.specs import source_from_spec
from ingestq.ingest.attempt import ingest_once
from ingestq.ingest.request import make_request
from ingestq.store.local import LocalStore
from tests.servers import oci
from tests.servers.registry import Registry
from tests.tasks.blobserver import Behaviour, BlobServer
from tests.tasks.registry_helpers import FrontFactory, make_tls
from tests.tasks.registry_helpers import fronts_fixture as fronts_fixture

#: Far longer than a refused handshake takes: the errors below must not be timeouts.
CONNECT_TIMEOUT = 20.0


def hashed_ca_dir(directory: Path, ca: Path) -> Path:
    """``directory`` made a CA directory as OpenSSL reads one: ``ca`` in it, under the
    hashed name ``openssl rehash`` links it by."""
    directory.mkdir()
    shutil.copy(ca, directory / ca.name)
    subprocess.run(["openssl", "rehash", str(directory)], check=True, capture_output=True)
    return directory


def _failed_precondition(open_: object, match: str) -> errdefs.FailedPrecondition:
    assert callable(open_)
    started = time.monotonic()
    with pytest.raises(errdefs.FailedPrecondition, match=match) as caught:
        open_()
    assert time.monotonic() - started < CONNECT_TIMEOUT / 4
    return caught.value


def test_https_to_a_plain_http_server_is_failed_precondition_at_once(
    blob_server: BlobServer, tmp_path: Path
) -> None:
    url = blob_server.add("/x", Behaviour(data=b"abc")).replace("http://", "https://", 1)
    with new_client(connect_timeout=CONNECT_TIMEOUT) as client:
        error = _failed_precondition(HttpSource(url, client).open, "TLS handshake failed")
    assert "plain HTTP" in str(error)

    # Through the spec factory and the ingest core: the same kind, nothing stored.
    spec = {"type": "http", "url": url}
    source = source_from_spec(spec, FetchOptions(http_connect_timeout=CONNECT_TIMEOUT))
    store = LocalStore(tmp_path / "store", fsync=False)
    request = make_request(spec, url)
    _failed_precondition(lambda: ingest_once(store, source, request), "TLS handshake failed")
    assert list(store.walk()) == [] and store.list_statuses() == []
    assert blob_server.requests_for("/x") == []


def test_an_untrusted_certificate_is_failed_precondition_and_a_trusted_one_serves(
    blob_server: BlobServer, fronts: FrontFactory, tmp_path: Path
) -> None:
    pki = make_tls(tmp_path / "pki")
    # Over 1 MiB: the body is read past h11 (fetch.transport.RawBody), here through TLS.
    data = os.urandom(RAW_BODY_MIN + 200_000)
    blob_server.add("/x", Behaviour(data=data))
    front = fronts(blob_server.url, tls=(pki["cert"], pki["key"]))
    url = f"{front.url}/x"
    assert url.startswith("https://")
    with new_client(connect_timeout=CONNECT_TIMEOUT) as client:
        source = HttpSource(url, client)
        _failed_precondition(source.open, "certificate verification failed")
    assert front.requests() == []
    with new_client(verify=ssl_context(ca_bundle=str(pki["ca"]))) as trusted:
        opened = HttpSource(url, trusted).open()
        assert (opened.start, opened.size, opened.stream.read(-1)) == (0, len(data), data)
        opened.stream.close()
    with new_client(verify=ssl_context(insecure_skip_verify=True)) as skipping:
        opened = HttpSource(url, skipping).open(1000)
        assert (opened.start, opened.stream.read(-1)) == (1000, data[1000:])
        opened.stream.close()


def test_the_registry_source_fails_the_same_way(registry: Registry) -> None:
    oci.push_image(registry, "app", "v1", [b"plain"])
    ref = parse_reference(f"{registry.host}/app:v1")
    tls_only = RegistryOptions(plain_http=False, connect_timeout=CONNECT_TIMEOUT)
    with RegistryClient(tls_only) as client:
        error = _failed_precondition(lambda: client.resolve(ref), "TLS handshake failed")
    assert "plain HTTP" in str(error)


def test_the_system_trust_is_read_at_the_first_handshake_once(
    blob_server: BlobServer, fronts: FrontFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default context (the system's CAs) reads them when a TLS connection first
    needs them, not when it is made: plain HTTP never reads them, a handshake reads them
    as the environment names them then (``SSL_CERT_FILE``), once for any number of
    threads, and a context that has read them still refuses what they do not trust."""
    pki = make_tls(tmp_path / "pki")
    data = os.urandom(100_000)
    plain_url = blob_server.add("/x", Behaviour(data=data))
    tls_url = f"{fronts(blob_server.url, tls=(pki['cert'], pki['key'])).url}/x"
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)

    ctx = ssl_context()
    assert isinstance(ctx, SystemTrustContext)
    loads: list[int] = []
    load = ctx.load_default_certs

    def counted(purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH) -> None:
        loads.append(1)
        load(purpose)

    monkeypatch.setattr(ctx, "load_default_certs", counted)
    with new_client(verify=ctx, connect_timeout=CONNECT_TIMEOUT) as client:
        opened = HttpSource(plain_url, client).open()
        assert opened.stream.read(-1) == data
        opened.stream.close()
        assert ctx.cert_store_stats()["x509_ca"] == 0 and loads == []

        # Trusted through the environment set after the context was made.
        monkeypatch.setenv("SSL_CERT_FILE", str(pki["ca"]))

        def fetch(start: int) -> bytes:
            got = HttpSource(tls_url, client).open(start)
            try:
                return got.stream.read(-1)
            finally:
                got.stream.close()

        with ThreadPoolExecutor(8) as pool:
            bodies = list(pool.map(fetch, range(8)))
    assert bodies == [data[i:] for i in range(8)]
    assert loads == [1] and ctx.cert_store_stats()["x509_ca"] >= 1

    monkeypatch.delenv("SSL_CERT_FILE")
    untrusting = ssl_context()
    assert isinstance(untrusting, SystemTrustContext)
    with new_client(verify=untrusting, connect_timeout=CONNECT_TIMEOUT) as client:
        _failed_precondition(HttpSource(tls_url, client).open, "certificate verification failed")
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    assert untrusting.cert_store_stats()["x509_ca"] == system


def test_an_http_source_trusts_the_system_store_not_certifi(
    blob_server: BlobServer, fronts: FrontFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``http`` source spec, ingested through the ingest core as a worker does it,
    trusts what OpenSSL's default paths hold, as a registry does: the bundle that
    ``SSL_CERT_FILE`` names and the directory that ``SSL_CERT_DIR`` names, both (httpx's
    default would take the file alone, and certifi's bundle when neither is set, which
    is unreadable here). A server signed by a CA only in that directory serves."""
    import certifi

    from ingestq.fetch import specs

    # Another CA name: a lookup by name would find either.
    file_ca = make_tls(tmp_path / "pki-file", ca_name="ingestq test CA in SSL_CERT_FILE")["ca"]
    pki = make_tls(tmp_path / "pki-dir")
    data = os.urandom(300_000)
    blob_server.add("/x", Behaviour(data=data))
    url = f"{fronts(blob_server.url, tls=(pki['cert'], pki['key'])).url}/x"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def no_certifi() -> str:
        raise AssertionError("certifi's bundle was read")

    monkeypatch.setattr(certifi, "where", no_certifi)
    monkeypatch.setattr(specs, "_clients", {})  # this process's shared clients: new ones
    monkeypatch.setenv("SSL_CERT_FILE", str(file_ca))
    monkeypatch.setenv("SSL_CERT_DIR", str(hashed_ca_dir(tmp_path / "certs", pki["ca"])))
    spec = {"type": "http", "url": url}
    store = LocalStore(tmp_path / "store", fsync=False)
    request = make_request(spec, url, digest=digest, size=len(data))
    result = ingest_once(store, source_from_spec(spec, FetchOptions()), request)
    assert str(result.info.digest) == digest
    assert store.blob_path(digest).read_bytes() == data

    # Without the directory (the file's CA did not sign the server): refused.
    monkeypatch.setattr(specs, "_clients", {})
    monkeypatch.delenv("SSL_CERT_DIR")
    store.delete(digest)
    refused = _failed_precondition(
        lambda: ingest_once(store, source_from_spec(spec, FetchOptions()), request),
        "certificate verification failed",
    )
    assert "no CA certificates" not in str(refused), "the system has some: no hint"


def test_a_system_without_cas_is_named_in_the_error(
    blob_server: BlobServer, fronts: FrontFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where OpenSSL's default paths hold nothing (a slim image without
    ca-certificates), a refused certificate says so and how to fix it."""
    pki = make_tls(tmp_path / "pki")
    blob_server.add("/x", Behaviour(data=b"x"))
    url = f"{fronts(blob_server.url, tls=(pki['cert'], pki['key'])).url}/x"
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-bundle.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
    with new_client(connect_timeout=CONNECT_TIMEOUT) as client:
        error = _failed_precondition(HttpSource(url, client).open, "verification failed")
    assert "this system has no CA certificates" in str(error)
    assert "SSL_CERT_FILE" in str(error)

    # A list of directories (OpenSSL reads each), the second one hashed: CAs there.
    hashed = hashed_ca_dir(tmp_path / "hashed", make_tls(tmp_path / "other")["ca"])
    monkeypatch.setenv("SSL_CERT_DIR", f"{tmp_path / 'no-such-dir'}{os.pathsep}{hashed}")
    with new_client(connect_timeout=CONNECT_TIMEOUT) as client:
        error = _failed_precondition(HttpSource(url, client).open, "verification failed")
    assert "no CA certificates" not in str(error)
