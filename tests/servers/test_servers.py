"""The real-server fixtures and push helpers, exercised against the real binaries."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest

from tests.servers import (
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    ContainerdDaemon,
    MissingToolError,
    Platform,
    RedisFactory,
    RedisServer,
    Registry,
    WaitTimeout,
    build_image,
    free_port,
    make_oci_layout,
    make_tar_layer,
    push_blob,
    push_image,
    push_index,
    require_binary,
    running_containerd,
    sha256_digest,
    skopeo_copy,
    skopeo_inspect,
    wait_until,
)

# --- utilities ---------------------------------------------------------------------


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_wait_until_returns_value_and_times_out_with_message() -> None:
    calls = iter([None, 0, "ready"])
    assert wait_until(lambda: next(calls), 5, "the third call") == "ready"

    def boom() -> bool:
        raise ConnectionRefusedError("nope")

    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"waiting for the thing.*ConnectionRefusedError"):
        wait_until(boom, 0.2, "the thing")
    assert time.monotonic() - started < 2


def test_missing_binary_tells_to_run_scripts_test() -> None:
    with pytest.raises(MissingToolError, match="scripts/test"):
        require_binary("no-such-binary-ingestq")


def test_fixture_without_binary_fails_with_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingToolError, match=r"'redis-server'.*scripts/test"):
        RedisServer(tmp_path / "redis").start()
    with pytest.raises(MissingToolError, match=r"'docker-registry'.*scripts/test"):
        Registry(tmp_path / "registry").start()


# --- redis -------------------------------------------------------------------------


def test_redis_ping_set_survive_restart_with_aof(redis_server: RedisServer) -> None:
    client = redis_server.client()
    assert client.ping()
    client.set("k", "v1")
    port, url = redis_server.port, redis_server.url
    assert url == f"redis://127.0.0.1:{port}/0"

    redis_server.stop()
    assert not redis_server.running
    redis_server.start()
    assert (redis_server.port, redis_server.url) == (port, url)
    assert client.get("k") == b"v1"  # the old client reconnects


def test_redis_kill_then_restart_keeps_fsynced_data(redis_factory: RedisFactory) -> None:
    server = redis_factory(appendfsync="always")
    server.client().set("durable", "yes")
    server.stop(kill=True)
    server.start()
    assert server.client().get("durable") == b"yes"


def test_redis_url_is_flushed(redis_url: str, redis_session: RedisServer) -> None:
    assert redis_url == redis_session.url
    client = redis_session.client()
    assert client.dbsize() == 0
    client.set("leftover", "1")  # the next test using redis_url must not see it


def test_redis_url_is_flushed_again(redis_url: str, redis_session: RedisServer) -> None:
    assert redis_session.client().dbsize() == 0


# --- registry ----------------------------------------------------------------------


def test_registry_v2_answers_200(registry: Registry) -> None:
    assert registry.host == f"127.0.0.1:{registry.port}"
    response = httpx.get(f"{registry.url}/v2/")
    assert response.status_code == 200
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    config = registry.config_path.read_text()
    assert f'"{registry.host}"' in config
    assert "delete:\n    enabled: true" in config


def test_pushed_blob_is_fetchable_and_counted(registry: Registry) -> None:
    data = b"hello blob\n" * 1000
    digest = push_blob(registry, "library/demo", data)
    assert digest == sha256_digest(data)
    assert registry.count_blob_gets(digest) == 0

    with registry.client() as http:
        for _ in range(2):
            response = http.get(f"/v2/library/demo/blobs/{digest}")
            assert response.status_code == 200
            assert response.content == data
        assert http.head(f"/v2/library/demo/blobs/{digest}").status_code == 200
        assert http.get(f"/v2/other/blobs/{digest}").status_code == 404

    assert registry.count_blob_gets(digest) == 3
    assert registry.count_blob_gets(digest, "library/demo") == 2
    assert registry.count_blob_gets(digest, statuses={200}) == 2
    assert registry.count_blob_gets(digest, "other", statuses={404}) == 1


def test_registry_restart_keeps_content_and_log(registry: Registry) -> None:
    digest = push_blob(registry, "keep", b"persistent")
    with registry.client() as http:
        assert http.get(f"/v2/keep/blobs/{digest}").status_code == 200
    port = registry.port
    registry.restart()
    assert registry.port == port
    with registry.client() as http:
        assert http.get(f"/v2/keep/blobs/{digest}").content == b"persistent"
    assert registry.count_blob_gets(digest) == 2


def test_push_image_oci_and_docker(registry: Registry) -> None:
    layers = [make_tar_layer({"a.txt": b"A"}), make_tar_layer({"b.txt": b"B"}, compress=True)]
    oci = push_image(registry, "img", "oci", layers)
    docker = push_image(registry, "img", "docker", layers, flavor="docker")
    assert oci != docker
    with registry.client(headers={"Accept": MANIFEST_ACCEPT}) as http:
        got = http.get("/v2/img/manifests/oci")
        assert got.headers["content-type"] == OCI_MANIFEST
        assert got.headers["docker-content-digest"] == oci
        got = http.get("/v2/img/manifests/docker")
        assert got.headers["docker-content-digest"] == docker
        manifest = got.json()
        assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        for layer, desc in zip(layers, manifest["layers"], strict=True):
            blob = http.get(f"/v2/img/blobs/{desc['digest']}")
            assert blob.content == layer


def test_push_index_multi_platform(registry: Registry) -> None:
    amd = build_image([b"amd64 layer"], platform=Platform("linux", "amd64"))
    arm = build_image([b"arm64 layer"], platform=Platform("linux", "arm64", "v8"))
    digest = push_index(registry, "multi", "v1", [amd, arm])
    with registry.client(headers={"Accept": MANIFEST_ACCEPT}) as http:
        got = http.get("/v2/multi/manifests/v1")
        assert got.status_code == 200
        assert got.headers["content-type"] == OCI_INDEX
        assert got.headers["docker-content-digest"] == digest
        platforms = {
            (m["platform"]["architecture"], m["platform"].get("variant")): m["digest"]
            for m in got.json()["manifests"]
        }
        assert platforms == {("amd64", None): amd.digest, ("arm64", "v8"): arm.digest}
        assert http.get(f"/v2/multi/manifests/{arm.digest}").status_code == 200
    inspected = skopeo_inspect(f"docker://{registry.host}/multi:v1", raw=True)
    assert inspected["mediaType"] == OCI_INDEX


# --- token auth --------------------------------------------------------------------


def _parse_challenge(header: str) -> dict[str, str]:
    scheme, _, params = header.partition(" ")
    assert scheme == "Bearer"
    return dict(re.findall(r'(\w+)="([^"]*)"', params))


def test_token_auth_registry_bearer_flow(registry_token_auth: Registry) -> None:
    reg = registry_token_auth
    assert reg.token_server is not None
    digest = push_blob(reg, "secure/app", b"secret bytes")

    blob_url = f"{reg.url}/v2/secure/app/blobs/{digest}"
    challenged = httpx.get(blob_url)
    assert challenged.status_code == 401
    assert challenged.json()["errors"][0]["code"] == "UNAUTHORIZED"
    challenge = _parse_challenge(challenged.headers["www-authenticate"])
    assert challenge["realm"] == reg.token_server.realm
    assert challenge["service"] == reg.service
    assert challenge["scope"] == "repository:secure/app:pull"

    query = urllib.parse.urlencode({"service": challenge["service"], "scope": challenge["scope"]})
    token_response = httpx.get(f"{challenge['realm']}?{query}")
    assert token_response.status_code == 200
    token = token_response.json()["token"]
    assert token_response.json()["access_token"] == token
    assert reg.token_server.requests[-1].scopes == ("repository:secure/app:pull",)
    assert reg.token_server.requests[-1].service == reg.service

    fetched = httpx.get(blob_url, headers={"Authorization": f"Bearer {token}"})
    assert fetched.status_code == 200
    assert fetched.content == b"secret bytes"
    assert reg.count_blob_gets(digest) == 2
    assert reg.count_blob_gets(digest, statuses={200}) == 1

    v2 = httpx.get(f"{reg.url}/v2/")
    assert v2.status_code == 401
    assert "scope" not in _parse_challenge(v2.headers["www-authenticate"])


def test_skopeo_handles_token_auth(registry_token_auth: Registry, tmp_path: Path) -> None:
    digest = make_oci_layout(tmp_path / "layout", "v1", [make_tar_layer({"f": b"x"})])
    skopeo_copy(f"oci:{tmp_path / 'layout'}:v1", f"docker://{registry_token_auth.host}/tok:v1")
    inspected = skopeo_inspect(f"docker://{registry_token_auth.host}/tok:v1")
    assert inspected["Digest"] == digest
    assert registry_token_auth.token_server is not None
    assert registry_token_auth.token_server.issued  # skopeo went through the realm


# --- OCI layout and skopeo ---------------------------------------------------------


def test_make_oci_layout_readable_by_skopeo(tmp_path: Path, registry: Registry) -> None:
    layout = tmp_path / "layout"
    layers = [make_tar_layer({"hello.txt": b"hello"}), make_tar_layer({"bye.txt": b"bye"})]
    digest = make_oci_layout(layout, "v1", layers, platform=Platform("linux", "arm64"))
    make_oci_layout(layout, "v2", [b"another"])

    index = json.loads((layout / "index.json").read_text())
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert names == ["v1", "v2"]
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}

    inspected = skopeo_inspect(f"oci:{layout}:v1")
    assert inspected["Digest"] == digest
    assert inspected["Architecture"] == "arm64"
    assert inspected["Layers"] == [sha256_digest(x) for x in layers]

    skopeo_copy(f"oci:{layout}:v1", f"docker://{registry.host}/copied:v1")
    with registry.client(headers={"Accept": MANIFEST_ACCEPT}) as http:
        got = http.head("/v2/copied/manifests/v1")
    assert got.headers["docker-content-digest"] == digest  # --preserve-digests


# --- containerd --------------------------------------------------------------------


def test_containerd_daemon_answers_ctr_version(containerd_daemon: ContainerdDaemon) -> None:
    assert len(containerd_daemon.address) < 100  # unix socket path limit
    version = containerd_daemon.ctr("version")
    assert "Server:" in version.stdout
    data = b"content for containerd\n"
    digest = sha256_digest(data)
    ok = containerd_daemon.ctr(
        "content", "ingest", "--expected-digest", digest, "ref-ok", input_bytes=data
    )
    assert ok.returncode == 0
    bad = containerd_daemon.ctr(
        "content",
        "ingest",
        "--expected-digest",
        sha256_digest(b"other"),
        "ref-bad",
        input_bytes=data,
        check=False,
    )
    assert bad.returncode != 0
    assert "unexpected commit digest" in bad.stderr


def test_containerd_without_gc_keeps_unreferenced_content(tmp_path: Path) -> None:
    with running_containerd(tmp_path / "ctrd", gc=False) as daemon:
        data = b"kept without a lease"
        daemon.ctr("content", "ingest", "ref", input_bytes=data)
        assert sha256_digest(data) in daemon.ctr("content", "ls", "-q").stdout.split()
