"""Registry authentication: challenge parsing, docker config files, the sans-I/O flow
driven by hand, and the whole handshake against real registries (silly Bearer auth with
a live token server, and a Basic-auth front)."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from ingestq import errdefs
from ingestq.fetch.reference import parse_reference
from ingestq.fetch.registry.auth import (
    Credential,
    DockerConfigCredentials,
    RegistryAuth,
    StaticCredentials,
    parse_challenges,
    parse_docker_config,
    scope_for_path,
)
from ingestq.fetch.registry.client import RegistryClient, RegistryOptions
from ingestq.store.digest import Digest
from ingestq.store.values import Descriptor
from tests.servers import oci
from tests.servers.registry import Registry, RegistryFactory, TokenServer
from tests.tasks.registry_helpers import FrontFactory, docker_config
from tests.tasks.registry_helpers import fronts_fixture as fronts_fixture


def test_challenges_are_parsed_with_quotes_commas_and_several_schemes() -> None:
    value = (
        'Bearer realm="http://auth/token",service="reg",'
        'scope="repository:a/b:pull,push",error="insufficient_scope", Basic realm="x\\"y"'
    )
    bearer, basic = parse_challenges(value)
    assert bearer.scheme == "bearer"
    assert bearer.params == {
        "realm": "http://auth/token",
        "service": "reg",
        "scope": "repository:a/b:pull,push",
        "error": "insufficient_scope",
    }
    assert bearer.scopes == ("repository:a/b:pull,push",)
    assert basic.scheme == "basic" and basic.params == {"realm": 'x"y'}
    assert parse_challenges(["Basic realm=r", "Bearer realm=t"])[1].params == {"realm": "t"}
    assert parse_challenges("") == []


def test_scopes_come_from_the_request_path() -> None:
    assert scope_for_path("/v2/a/b/blobs/sha256:00") == "repository:a/b:pull"
    assert scope_for_path("/v2/app/manifests/v1") == "repository:app:pull"
    assert scope_for_path("/v2/app/tags/list") == "repository:app:pull"
    assert scope_for_path("/v2/") is None


def test_docker_config_entries_in_every_spelling(tmp_path: Path) -> None:
    doc = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
            "registry.example.com:5000": {"username": "u", "password": "p:with:colons"},
            "https://ghcr.io": {"identitytoken": "refresh-me"},
            "empty.example.com": {},
        }
    }
    import json

    creds = parse_docker_config(json.dumps(doc))
    assert creds["docker.io"] == Credential("hub", "pw")
    assert creds["registry.example.com:5000"] == Credential("u", "p:with:colons")
    assert creds["ghcr.io"].is_identity_token
    assert "empty.example.com" not in creds
    assert "secret=<hidden>" in repr(creds["docker.io"])
    path = docker_config(tmp_path / "config.json", {"127.0.0.1:1": ("a", "b")})
    provider = DockerConfigCredentials([tmp_path / "missing.json", path])
    assert provider.lookup("127.0.0.1:1") == Credential("a", "b")
    assert provider.lookup("registry-1.docker.io") is None


def test_a_broken_docker_config_is_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="not JSON"):
        parse_docker_config("{")
    with pytest.raises(errdefs.InvalidArgument, match="auth"):
        parse_docker_config('{"auths": {"h": {"auth": "%%%"}}}')
    bad = tmp_path / "config.json"
    bad.write_text('{"auths": {"h": {"auth": "' + base64.b64encode(b"nocolon").decode() + '"}}}')
    with pytest.raises(errdefs.InvalidArgument, match="user:password"):
        DockerConfigCredentials([bad])


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _challenge() -> httpx.Response:
    return httpx.Response(
        401,
        headers={
            "WWW-Authenticate": 'Bearer realm="https://auth.test/token",service="svc",'
            'scope="repository:app:pull"'
        },
    )


def test_the_flow_by_hand_challenge_token_retry_then_cached_then_refreshed() -> None:
    clock = _Clock()
    auth = RegistryAuth(StaticCredentials({"reg.test": Credential("me", "pw")}), clock=clock)
    flow = auth.auth_flow(httpx.Request("GET", "https://reg.test/v2/app/manifests/v1"))
    first = next(flow)
    assert "Authorization" not in first.headers
    token_request = flow.send(_challenge())
    assert token_request.url.host == "auth.test"
    assert token_request.url.params.get_list("scope") == ["repository:app:pull"]
    assert token_request.url.params["service"] == "svc"
    assert token_request.headers["Authorization"] == "Basic " + base64.b64encode(b"me:pw").decode()
    retried = flow.send(httpx.Response(200, json={"access_token": "T1", "expires_in": 300}))
    assert retried.headers["Authorization"] == "Bearer T1"
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(200))

    # The next request to the same repository carries the cached token at once.
    again = auth.auth_flow(httpx.Request("GET", "https://reg.test/v2/app/blobs/sha256:00"))
    assert next(again).headers["Authorization"] == "Bearer T1"
    with pytest.raises(StopIteration):
        again.send(httpx.Response(200))

    # Once it expires, a new token is fetched before the request (no wasted 401).
    clock.now += 400
    later = auth.auth_flow(httpx.Request("GET", "https://reg.test/v2/app/blobs/sha256:00"))
    proactive = next(later)
    assert proactive.url.host == "auth.test"
    sent = later.send(httpx.Response(200, json={"token": "T2"}))
    assert sent.headers["Authorization"] == "Bearer T2"
    assert auth.token_requests == 2


def test_the_flow_by_hand_turns_token_refusals_into_kinds() -> None:
    for status, kind in [
        (401, errdefs.Unauthenticated),
        (403, errdefs.PermissionDenied),
        (503, errdefs.Unavailable),
    ]:
        flow = RegistryAuth().auth_flow(httpx.Request("GET", "https://reg.test/v2/app/tags/list"))
        next(flow)
        token_request = flow.send(_challenge())
        with pytest.raises(kind, match="token request"):
            flow.send(httpx.Response(status, request=token_request, text="no"))
    flow = RegistryAuth().auth_flow(httpx.Request("GET", "https://reg.test/v2/app/tags/list"))
    next(flow)
    token_request = flow.send(_challenge())
    with pytest.raises(errdefs.InvalidArgument, match="no token"):
        flow.send(httpx.Response(200, request=token_request, json={"nothing": 1}))


def test_anonymous_bearer_handshake_against_the_registry_fetches_one_token_per_scope(
    registry_token_auth: Registry,
) -> None:
    reg = registry_token_auth
    digest = oci.push_image(reg, "app", "v1", [b"a" * 100, b"b" * 200])
    with RegistryClient() as client:
        ref = parse_reference(f"{reg.host}/app:v1")
        desc = client.resolve(ref)
        assert str(desc.digest) == digest
        data = client.fetch_manifest(ref, desc)
        image = oci.build_image([b"a" * 100, b"b" * 200])
        assert data == image.manifest
        for layer in image.layer_descriptors:
            from ingestq.store.values import Descriptor

            blob = client.open_blob(ref, Descriptor.from_oci(layer.to_json()))
            assert len(blob.stream.read(-1)) == layer.size
        assert client.auth.token_requests == 1
    tokens = reg.token_server
    assert tokens is not None
    assert [r.scopes for r in tokens.requests] == [("repository:app:pull",)]
    assert tokens.requests[0].service == reg.service
    assert tokens.requests[0].authorization is None
    challenged = [e for e in reg.access_log() if e.status == 401 and e.path != "/v2/"]
    assert len(challenged) == 1  # only the very first request was challenged


def test_credentials_from_a_docker_config_reach_the_token_server(
    registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    tokens = TokenServer(credentials=("alice", "s3cret"))
    tokens.start()
    try:
        reg = registry_factory(token_server=tokens)
        oci.push_image(reg, "private", "v1", [b"p" * 10])
        ref = parse_reference(f"{reg.host}/private:v1")
        config = docker_config(tmp_path / "config.json", {reg.host: ("alice", "s3cret")})
        with RegistryClient(RegistryOptions(auth_files=(str(config),))) as client:
            assert client.resolve(ref).media_type == oci.OCI_MANIFEST
        expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()
        assert tokens.requests[-1].authorization == expected
        with (
            RegistryClient(RegistryOptions(auth_files=())) as anonymous,
            pytest.raises(errdefs.Unauthenticated, match="token request") as err,
        ):
            anonymous.resolve(ref)
        assert err.value.details["status"] == "401"
    finally:
        tokens.stop()


def test_basic_auth_registry_gets_credentials_after_one_challenge(
    registry: Registry, fronts: FrontFactory
) -> None:
    front = fronts(registry.url, basic=("bob", "pw"))
    oci.push_image(registry, "app", "v1", [b"z" * 10])
    ref = parse_reference(f"{front.host}/app:v1")
    creds = StaticCredentials({front.host: Credential("bob", "pw")})
    with RegistryClient(credentials=creds) as client:
        first = client.resolve(ref)
        assert client.resolve(ref) == first
    statuses = [r.status for r in front.requests()]
    assert statuses == [401, 200, 200]  # challenged once, then Basic sent up front
    with (
        RegistryClient(credentials=StaticCredentials()) as anonymous,
        pytest.raises(errdefs.Unauthenticated, match="401") as err,
    ):
        anonymous.resolve(ref)
    assert err.value.details["code"] == "UNAUTHORIZED"
    assert err.value.details["www_authenticate"] == 'Basic realm="front"'


def test_credentials_never_go_to_a_plain_http_realm_of_an_https_registry() -> None:
    """Reached over https, a registry whose challenge names an http:// realm would have
    the Basic credentials (and the token they buy) cross the network in the clear."""
    challenge = httpx.Response(
        401, headers={"WWW-Authenticate": 'Bearer realm="http://auth.test/token",service="s"'}
    )
    creds = StaticCredentials({"reg.test": Credential("me", "pw")})
    flow = RegistryAuth(creds).auth_flow(httpx.Request("GET", "https://reg.test/v2/app/tags/list"))
    next(flow)
    with pytest.raises(errdefs.PermissionDenied, match="over plain http"):
        flow.send(challenge)
    # Anonymous: nothing secret to send, and a plain-http registry may use one too.
    for url, cred in [("https://reg.test/v2/app/tags/list", None),
                      ("http://reg.test/v2/app/tags/list", creds)]:  # fmt: skip
        flow = RegistryAuth(cred).auth_flow(httpx.Request("GET", url))
        next(flow)
        assert flow.send(challenge).url.host == "auth.test"


def test_a_token_goes_only_to_the_registry_that_asked_for_it(
    registry_factory: RegistryFactory, fronts: FrontFactory
) -> None:
    """A second registry that answers with the first one's challenge (realm, service,
    scope) does not get the token cached for the first: it is asked for with this
    registry's credentials (none here), and the token server refuses."""
    tokens = TokenServer(credentials=("alice", "s3cret"))
    tokens.start()
    try:
        reg = registry_factory(token_server=tokens)
        oci.push_image(reg, "private", "v1", [b"p" * 10])
        evil = fronts(reg.url, host_name="localhost")
        borrowed = {"WWW-Authenticate": f'Bearer realm="{tokens.realm}",service="{reg.service}",'
                                        f'scope="repository:private:pull"'}  # fmt: skip
        evil.rule(r"^(HEAD|GET) /v2/", responses=[(401, borrowed, b"")] * 4)
        creds = StaticCredentials({reg.host: Credential("alice", "s3cret")})
        with RegistryClient(credentials=creds) as client:
            client.resolve(parse_reference(f"{reg.host}/private:v1"))
            assert tokens.issued, "the first registry's token flow ran"
            with pytest.raises(errdefs.Unauthenticated, match="token request"):
                client.resolve(parse_reference(f"{evil.host}/private:v1"))
        assert evil.requests(), "the second registry was asked"
        assert all("authorization" not in r.headers for r in evil.requests())
        assert tokens.requests[-1].authorization is None, "its credentials went along"
    finally:
        tokens.stop()


def test_a_401_from_where_a_blob_redirects_neither_gets_credentials_nor_takes_over(
    registry_factory: RegistryFactory, fronts: FrontFactory
) -> None:
    """The registry redirects a blob to storage on another origin, which answers 401
    with a challenge naming its own realm: httpx followed the redirect before the auth
    flow sees that 401, so the flow must not treat it as the registry's. The blob fails
    Unauthenticated; storage never sees a credential or a token request; the registry
    keeps its own challenge and token for the next request."""
    tokens = TokenServer(credentials=("alice", "s3cret"))
    tokens.start()
    try:
        reg = registry_factory(token_server=tokens)
        digest = oci.push_blob(reg, "app", b"b" * 1000)
        oci.push_image(reg, "app", "v1", [b"small"])
        storage = fronts(reg.url, host_name="localhost")
        challenge = {"WWW-Authenticate": f'Bearer realm="{storage.url}/token",service="evil"'}
        storage.rule(r"^GET /v2/", responses=[(401, challenge, b"")] * 3)
        storage.rule(r"^GET /token", responses=[(200, {}, b'{"token": "EVIL"}')] * 3)
        front = fronts(reg.url)
        front.rule(r"^GET /v2/app/blobs/", redirect_to=storage.url)
        ref = parse_reference(f"{front.host}/app")
        creds = StaticCredentials({front.host: Credential("alice", "s3cret")})
        with RegistryClient(credentials=creds) as client:
            client.resolve(ref.with_tag("v1"))
            desc = Descriptor(Digest.parse(digest), 1000)
            with pytest.raises(errdefs.Unauthenticated, match="401"):
                client.open_blob(ref, desc)
            client.resolve(ref.with_tag("v1"))
        assert not storage.requests(contains="/token"), "storage was asked for a token"
        assert all("authorization" not in r.headers for r in storage.requests())
        last = front.requests("HEAD", "/manifests/")[-1]
        assert last.status == 200
        assert last.headers["authorization"] == f"Bearer {tokens.issued[-1]}"
    finally:
        tokens.stop()


def test_a_401_after_the_https_upgrade_is_not_taken_and_token_requests_ask_identity() -> None:
    """httpx follows a redirect from http to https of the same host; the flow would
    retry the http request it was given, so credentials bought for the https origin
    would cross the http one in the clear: that 401 is returned as it is. A token
    request the flow builds asks for identity, with ingestq's User-Agent."""
    flow = RegistryAuth().auth_flow(httpx.Request("GET", "http://reg.test/v2/app/tags/list"))
    next(flow)
    upgraded = httpx.Request("GET", "https://reg.test/v2/app/tags/list")
    challenge = {"WWW-Authenticate": 'Bearer realm="https://auth.test/token",service="s"'}
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(401, headers=challenge, request=upgraded))
    flow = RegistryAuth().auth_flow(httpx.Request("GET", "https://reg.test/v2/app/tags/list"))
    next(flow)
    token_request = flow.send(httpx.Response(401, headers=challenge))
    assert token_request.url.host == "auth.test"
    assert token_request.headers["accept-encoding"] == "identity"
    assert token_request.headers["user-agent"] == "ingestq"
