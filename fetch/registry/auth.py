"""Registry authentication: challenges, credentials, and the Bearer/Basic flow.

The flow is sans-I/O: :class:`RegistryAuth` is an ``httpx.Auth`` whose
:meth:`~RegistryAuth.auth_flow` generator *yields* requests (the token request, the
retried request) and *receives* responses; it never touches a socket, so it can be
driven by hand with constructed responses, and by any httpx client.

The flow, per request (distribution's token spec, Part B4):

1. If the request's host is known to want Bearer tokens and a fresh token for the
   request's scope (``repository:<name>:pull``, from the URL path) is cached, send it;
   if the host is known but no token is cached, fetch one first (no wasted 401).
   A host known to want Basic gets the credentials at once.
2. On ``401`` with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``: ask
   the realm for a token (``GET realm?service=&scope=``, with Basic credentials when
   there are any; ``POST`` ``grant_type=refresh_token`` for an identity token), cache
   it per (registry host, realm, service, scopes) until ``expires_in`` (default 60 s)
   runs out, and retry once with ``Authorization: Bearer <token>``. A token is only
   ever sent to the host that got it, whatever realm another host's challenge names;
   credentials are not sent to a plain-http realm of a registry reached over https
   (PermissionDenied).
3. On ``401`` with ``Basic``: retry once with the credentials, if there are any.

Only a 401 from the request's own origin is a challenge: httpx follows redirects
before the flow sees the response, and a 401 from a blob's storage host (another
origin) is returned to the caller as it is, its challenge ignored.

A second 401 is returned to the caller, which maps it to Unauthenticated. A token
endpoint that refuses raises the kind of its status by the one mapping of
:func:`ingestq.fetch.httpio.status_kind` (401 Unauthenticated, 403 PermissionDenied,
429/503 Unavailable, ...); a malformed token response is
:class:`errdefs.InvalidArgument`.

Credentials come from a :class:`Credentials` provider: :class:`StaticCredentials`
(configuration) or :class:`DockerConfigCredentials` (a docker ``config.json``'s
``auths``; credential helpers are not run). Redirects are followed by httpx itself,
which drops ``Authorization`` on a hop to another origin.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from ingestq import errdefs
from ingestq.fetch import httpio

#: Seconds a token must still be valid for to be reused.
TOKEN_MARGIN = 5.0
#: ``expires_in`` when the token response has none (the spec's default).
DEFAULT_EXPIRES_IN = 60
#: The client id sent with OAuth2 refresh-token requests.
CLIENT_ID = "ingestq"
#: The largest token response taken (tokens are a few KiB; the rest is not read).
MAX_TOKEN_RESPONSE = 1 << 20

_DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
_TOKEN_EXTENSION = "ingestq_token_request"

#: A cached token's key: the registry host, the realm, the service and the scopes.
_TokenKey = tuple[str, str, str, tuple[str, ...]]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _answered(response: httpx.Response, sent: httpx.Request) -> httpx.URL:
    """The URL ``response`` answers (the last hop of a redirect), ``sent``'s for a
    response built by hand (driving the flow without a client)."""
    try:
        return response.request.url
    except RuntimeError:  # no request set on it
        return sent.url


def _same_origin(answered: httpx.URL, sent: httpx.URL) -> bool:
    """Whether ``answered`` is ``sent``'s origin. Not even its https upgrade: the flow
    retries the request it was given, so credentials for the https origin would go to
    the http one in the clear (name the registry by its https address instead)."""
    return (
        answered.scheme,
        answered.host,
        answered.port or _DEFAULT_PORTS.get(answered.scheme),
    ) == (
        sent.scheme,
        sent.host,
        sent.port or _DEFAULT_PORTS.get(sent.scheme),
    )


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: the scheme (lower case) and its parameters
    (keys lower case)."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def scopes(self) -> tuple[str, ...]:
        """The space-separated ``scope`` parameter, split."""
        return tuple(s for s in self.params.get("scope", "").split(" ") if s)


def parse_challenges(values: str | Iterable[str]) -> list[Challenge]:
    """Parse one or more ``WWW-Authenticate`` header values into challenges.

    Handles several challenges in one value (``Bearer realm="a",service="b", Basic
    realm="c"``), quoted strings with backslash escapes, and bare tokens. Unparseable
    pieces are skipped; an empty input gives an empty list.
    """
    texts = [values] if isinstance(values, str) else list(values)
    out: list[Challenge] = []
    for text in texts:
        current: dict[str, str] | None = None
        pos, n = 0, len(text)
        while pos < n:
            while pos < n and text[pos] in " \t,":
                pos += 1
            start = pos
            while pos < n and text[pos] not in " \t,=":
                pos += 1
            token = text[start:pos]
            if not token:
                pos += 1
                continue
            look = pos
            while look < n and text[look] in " \t":
                look += 1
            if look < n and text[look] == "=" and current is not None:
                pos = look + 1
                while pos < n and text[pos] in " \t":
                    pos += 1
                if pos < n and text[pos] == '"':
                    pos += 1
                    chars: list[str] = []
                    while pos < n and text[pos] != '"':
                        if text[pos] == "\\" and pos + 1 < n:
                            pos += 1
                        chars.append(text[pos])
                        pos += 1
                    pos += 1
                    value = "".join(chars)
                else:
                    vstart = pos
                    while pos < n and text[pos] not in " \t,":
                        pos += 1
                    value = text[vstart:pos]
                current[token.lower()] = value
            else:
                current = {}
                out.append(Challenge(token.lower(), current))
    return [Challenge(c.scheme, dict(c.params)) for c in out]


@dataclass(frozen=True)
class Credential:
    """A username and secret for one registry. An empty username with a secret is an
    identity (refresh) token, used with OAuth2 ``grant_type=refresh_token``."""

    username: str
    secret: str

    @property
    def is_identity_token(self) -> bool:
        """True for a docker ``identitytoken`` (no username)."""
        return not self.username and bool(self.secret)

    def __repr__(self) -> str:
        return f"Credential(username={self.username!r}, secret=<hidden>)"


class Credentials(Protocol):
    """Looks up the credential for a registry host."""

    def lookup(self, host: str) -> Credential | None:
        """The credential for ``host`` (``host[:port]``), or None for anonymous access."""
        ...


def normalize_host(key: str) -> str:
    """A registry host as config files spell it, reduced to ``host[:port]``.

    Drops ``https://`` / ``http://`` and any path; the Docker Hub aliases
    (``https://index.docker.io/v1/``, ``registry-1.docker.io``) become ``docker.io``.
    """
    text = key.strip()
    for scheme in ("https://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    text = text.split("/", 1)[0].lower()
    return "docker.io" if text in _DOCKER_HUB_ALIASES else text


class StaticCredentials:
    """Credentials from configuration: ``{host: Credential}`` (hosts normalised)."""

    def __init__(self, entries: Mapping[str, Credential] | None = None) -> None:
        self._entries = {normalize_host(k): v for k, v in (entries or {}).items()}

    def lookup(self, host: str) -> Credential | None:
        return self._entries.get(normalize_host(host))


def default_docker_config_paths(env: Mapping[str, str] | None = None) -> list[Path]:
    """Where docker-style auth files are looked for, in order.

    ``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json`` (podman,
    skopeo), then ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``.
    """
    env = os.environ if env is None else env
    paths: list[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        paths.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    docker_dir = env.get("DOCKER_CONFIG")
    paths.append(
        Path(docker_dir) / "config.json" if docker_dir else Path.home() / ".docker/config.json"
    )
    return paths


class DockerConfigCredentials:
    """Credentials from docker ``config.json`` files (the ``auths`` section).

    Each entry may hold ``auth`` (base64 ``user:password``), ``username`` and
    ``password``, or ``identitytoken``. Files that do not exist are skipped; the
    first file naming a host wins. ``credsStore`` / ``credHelpers`` are not run.

    Raises InvalidArgument (at construction) for a file that exists but is not valid
    JSON or holds an undecodable ``auth``.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]] | None = None) -> None:
        self._entries: dict[str, Credential] = {}
        for raw_path in paths if paths is not None else default_docker_config_paths():
            path = Path(raw_path)
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            except OSError as e:
                raise errdefs.from_exception(e) from e
            for host, cred in parse_docker_config(text, str(path)).items():
                self._entries.setdefault(host, cred)

    def lookup(self, host: str) -> Credential | None:
        return self._entries.get(normalize_host(host))


def parse_docker_config(text: str, what: str = "config.json") -> dict[str, Credential]:
    """The credentials in a docker ``config.json`` text, by normalised host."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise errdefs.InvalidArgument(f"{what}: not JSON: {e}") from e
    auths = doc.get("auths") if isinstance(doc, dict) else None
    out: dict[str, Credential] = {}
    if not isinstance(auths, dict):
        return out
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            continue
        username = str(entry.get("username") or "")
        password = str(entry.get("password") or "")
        encoded = entry.get("auth")
        if encoded:
            try:
                decoded = base64.b64decode(str(encoded), validate=True).decode("utf-8")
            except ValueError as e:
                raise errdefs.InvalidArgument(f"{what}: auths[{key!r}].auth: {e}") from e
            username, sep, password = decoded.partition(":")
            if not sep:
                raise errdefs.InvalidArgument(f"{what}: auths[{key!r}].auth is not user:password")
        identity = str(entry.get("identitytoken") or "")
        if identity:
            out[normalize_host(key)] = Credential("", identity)
        elif username or password:
            out[normalize_host(key)] = Credential(username, password)
    return out


class ChainCredentials:
    """The first credential any of ``providers`` has for a host."""

    def __init__(self, providers: Sequence[Credentials]) -> None:
        self._providers = list(providers)

    def lookup(self, host: str) -> Credential | None:
        for provider in self._providers:
            found = provider.lookup(host)
            if found is not None:
                return found
        return None


class Anonymous:
    """No credentials for any host."""

    def lookup(self, host: str) -> Credential | None:
        return None


def scope_for_path(path: str, actions: str = "pull") -> str | None:
    """``repository:<name>:<actions>`` for a ``/v2/<name>/(blobs|manifests|tags)/...``
    path; None for ``/v2/`` and other paths."""
    if not path.startswith("/v2/"):
        return None
    rest = path[len("/v2/") :]
    for marker in ("/blobs/", "/manifests/", "/tags/"):
        cut = rest.rfind(marker)
        if cut > 0:
            return f"repository:{rest[:cut]}:{actions}"
    return None


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float


def _basic(cred: Credential) -> str:
    raw = f"{cred.username}:{cred.secret}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class RegistryAuth(httpx.Auth):
    """The Bearer / Basic flow for one set of credentials, shared by every request of a
    client (tokens are cached and reused across threads).

    Args:
        credentials: where credentials come from; None means anonymous.
        clock: seconds, monotonic (injectable for tests of expiry).
    """

    requires_request_body = False
    requires_response_body = False

    def __init__(
        self,
        credentials: Credentials | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._credentials: Credentials = credentials or Anonymous()
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._tokens: dict[_TokenKey, _Token] = {}
        self._hosts: dict[str, Challenge] = {}
        #: Every token request this flow has built (for tests and metrics).
        self.token_requests = 0

    # -- state --------------------------------------------------------------------------
    def _credential(self, host: str) -> Credential | None:
        return self._credentials.lookup(host)

    def _cached(self, key: _TokenKey) -> str | None:
        with self._lock:
            token = self._tokens.get(key)
            if token is None:
                return None
            if token.expires_at - TOKEN_MARGIN <= self._clock():
                del self._tokens[key]
                return None
            return token.value

    def _forget(self, key: _TokenKey) -> None:
        with self._lock:
            self._tokens.pop(key, None)

    @staticmethod
    def _key(host: str, challenge: Challenge, scopes: Sequence[str]) -> _TokenKey:
        # The registry's host is part of the key: a token is only ever sent to the host
        # whose challenge asked for it, whatever realm another host names.
        return (
            host,
            challenge.params.get("realm", ""),
            challenge.params.get("service", ""),
            tuple(sorted(set(scopes))),
        )

    # -- requests the flow yields -------------------------------------------------------
    def token_request(
        self,
        challenge: Challenge,
        scopes: Sequence[str],
        cred: Credential | None,
        registry: httpx.URL | None = None,
    ) -> httpx.Request:
        """The request that asks ``challenge``'s realm for a token for ``scopes``.

        InvalidArgument if the challenge has no usable realm; PermissionDenied if
        ``cred`` would go to a plain-http realm for a ``registry`` reached over https.
        """
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("http://", "https://")):
            raise errdefs.InvalidArgument(f"bearer challenge has no usable realm: {realm!r}")
        if (
            cred is not None
            and registry is not None
            and registry.scheme == "https"
            and realm.startswith("http://")
        ):
            raise errdefs.PermissionDenied(
                f"{registry.host} asks for a token from {realm}, over plain http: not "
                f"sending its credentials there"
            )
        service = challenge.params.get("service", "")
        self.token_requests += 1
        ext = {_TOKEN_EXTENSION: True, **httpio.small_body(MAX_TOKEN_RESPONSE)}
        # Built here, the request does not get the client's default headers.
        common = {"Accept-Encoding": "identity", "User-Agent": httpio.USER_AGENT}
        if cred is not None and cred.is_identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": cred.secret,
                "client_id": CLIENT_ID,
            }
            if service:
                form["service"] = service
            if scopes:
                form["scope"] = " ".join(scopes)
            return httpx.Request("POST", realm, data=form, headers=common, extensions=ext)
        params: list[tuple[str, str | int | float | bool | None]] = []
        if service:
            params.append(("service", service))
        params.extend(("scope", s) for s in scopes)
        headers = {**common, "Authorization": _basic(cred)} if cred is not None else common
        return httpx.Request("GET", realm, params=params, headers=headers, extensions=ext)

    def _take_token(
        self,
        request: httpx.Request,
        response: httpx.Response,
        key: _TokenKey,
    ) -> str:
        status = response.status_code
        where = f"token request to {request.url.copy_with(query=None)}"
        if status != 200:
            raise httpio.status_error(response, where, details={"body": response.text[:1000]})
        if len(response.content) > MAX_TOKEN_RESPONSE:
            raise errdefs.ResourceExhausted(
                f"{where}: response larger than {MAX_TOKEN_RESPONSE} bytes"
            )
        try:
            doc = response.json()
        except ValueError as e:
            raise errdefs.InvalidArgument(f"{where}: response is not JSON") from e
        token = ""
        expires_in: object = DEFAULT_EXPIRES_IN
        if isinstance(doc, dict):
            token = str(doc.get("token") or doc.get("access_token") or "")
            expires_in = doc.get("expires_in") or DEFAULT_EXPIRES_IN
        if not token:
            raise errdefs.InvalidArgument(f"{where}: response has no token")
        try:
            lifetime = max(float(str(expires_in)), float(DEFAULT_EXPIRES_IN))
        except ValueError:
            lifetime = float(DEFAULT_EXPIRES_IN)
        with self._lock:
            self._tokens[key] = _Token(token, self._clock() + lifetime)
        return token

    # -- the flow -----------------------------------------------------------------------
    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Authorize ``request``: yield it (and any token request), receive responses.

        See the module docstring for the steps. Raises the errdefs kinds listed there
        when the token endpoint refuses.
        """
        host = request.url.netloc.decode("ascii")
        scope = scope_for_path(request.url.path)
        wanted = [scope] if scope else []
        cred = self._credential(host)
        with self._lock:
            known = self._hosts.get(host)
        used_key: _TokenKey | None = None

        if "Authorization" not in request.headers and known is not None:
            if known.scheme == "bearer":
                scopes = list(wanted) or list(known.scopes)
                used_key = self._key(host, known, scopes)
                token = self._cached(used_key)
                if token is None:
                    token_request = self.token_request(known, scopes, cred, request.url)
                    token_response = yield token_request
                    token = self._take_token(token_request, token_response, used_key)
                request.headers["Authorization"] = f"Bearer {token}"
            elif known.scheme == "basic" and cred is not None and not cred.is_identity_token:
                request.headers["Authorization"] = _basic(cred)

        response = yield request
        # httpx follows redirects before the response comes back here: a 401 from
        # another origin (a blob's storage host) is that host's, not the registry's, and
        # neither its challenge nor the registry's credentials go anywhere near it.
        if response.status_code != 401 or not _same_origin(
            _answered(response, request), request.url
        ):
            return

        challenges = parse_challenges(response.headers.get_list("www-authenticate"))
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if bearer is not None:
            with self._lock:
                self._hosts[host] = bearer
            if used_key is not None:
                self._forget(used_key)
            scopes = list(bearer.scopes) or wanted
            key = self._key(host, bearer, scopes)
            token = None if key == used_key else self._cached(key)
            if token is None:
                token_request = self.token_request(bearer, scopes, cred, request.url)
                token_response = yield token_request
                token = self._take_token(token_request, token_response, key)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request
        elif basic is not None and cred is not None and not cred.is_identity_token:
            with self._lock:
                self._hosts[host] = basic
            if request.headers.get("Authorization") == _basic(cred):
                return
            request.headers["Authorization"] = _basic(cred)
            yield request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Run :meth:`auth_flow`, reading only the token responses' bodies (blob bodies
        stay streamed)."""
        flow = self.auth_flow(request)
        next_request = next(flow)
        while True:
            response = yield next_request
            if next_request.extensions.get(_TOKEN_EXTENSION):
                response.read()
            try:
                next_request = flow.send(response)
            except StopIteration:
                break


__all__ = [
    "Anonymous",
    "ChainCredentials",
    "Challenge",
    "Credential",
    "Credentials",
    "DockerConfigCredentials",
    "RegistryAuth",
    "StaticCredentials",
    "default_docker_config_paths",
    "normalize_host",
    "parse_challenges",
    "parse_docker_config",
    "scope_for_path",
]
