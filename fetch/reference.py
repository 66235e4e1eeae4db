"""Image and blob references: ``[HOST[:PORT]/]REPO[:TAG][@DIGEST]``.

The grammar is distribution's (``github.com/distribution/reference``), normalised the
way docker and containerd do it:

* a first path component that holds a ``.`` or a ``:``, is ``localhost``, or has an
  upper-case letter is the registry host; otherwise the host is ``docker.io``;
* on ``docker.io`` a single-component repository gets ``library/`` (``ubuntu`` is
  ``docker.io/library/ubuntu``), and ``index.docker.io`` is spelt ``docker.io``;
* a reference without tag and digest gets the tag ``latest`` (:func:`parse_reference`
  with ``default_tag=None`` leaves it empty, for blob references).

``str(ref)`` is always the fully qualified form, e.g.
``docker.io/library/ubuntu:latest`` or ``127.0.0.1:5000/app@sha256:...``. It is what
ingestq records as an image name (see :mod:`ingestq.images.request`).

Malformed input raises :class:`errdefs.InvalidArgument`; nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from ingestq import errdefs
from ingestq.store.digest import Digest

#: The default registry of short names, and the host its API really lives on.
DEFAULT_DOMAIN = "docker.io"
DOCKER_API_HOST = "registry-1.docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
# Matched with fullmatch only: ``$`` would also match before a trailing newline.
_PATH_COMPONENT = re.compile(rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised reference.

    Attributes:
        domain: the registry host as written (``docker.io``, ``127.0.0.1:5000``).
        path: the repository path inside the registry (``library/ubuntu``).
        tag: the tag, or None.
        digest: the digest, or None (when both are set the digest wins for fetching).
    """

    domain: str
    path: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def name(self) -> str:
        """``domain/path``: the repository's full name."""
        return f"{self.domain}/{self.path}"

    @property
    def object(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest, else the tag.

        InvalidArgument if the reference has neither.
        """
        if self.digest is not None:
            return str(self.digest)
        if self.tag is not None:
            return self.tag
        raise errdefs.InvalidArgument(f"reference {self} has neither tag nor digest")

    @property
    def api_host(self) -> str:
        """The host (and port) the registry API is served on (``docker.io`` maps to
        ``registry-1.docker.io``)."""
        return DOCKER_API_HOST if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def hostname(self) -> str:
        """The host without its port (and without IPv6 brackets)."""
        host = self.domain
        if host.startswith("["):
            return host[1 : host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def is_loopback(self) -> bool:
        """True for ``localhost`` and loopback addresses (plain HTTP by default)."""
        host = self.hostname
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def with_digest(self, digest: Digest) -> Reference:
        """The same repository and tag, pinned to ``digest``."""
        return replace(self, digest=digest)

    def with_tag(self, tag: str | None) -> Reference:
        """The same repository with ``tag`` (and no digest)."""
        return replace(self, tag=tag, digest=None)

    def blob(self, digest: Digest) -> Reference:
        """``domain/path@digest``: a blob (or manifest) of this repository."""
        return Reference(self.domain, self.path, None, digest)

    def familiar(self) -> str:
        """The short docker form (``ubuntu:latest`` for ``docker.io/library/ubuntu:latest``)."""
        name = self.name
        if self.domain == DEFAULT_DOMAIN:
            name = self.path
            if name.startswith(OFFICIAL_REPO_PREFIX) and name.count("/") == 1:
                name = name[len(OFFICIAL_REPO_PREFIX) :]
        return name + self._suffix()

    def _suffix(self) -> str:
        out = ""
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    def __str__(self) -> str:
        return self.name + self._suffix()


def _looks_like_domain(component: str) -> bool:
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or component.lower() != component
    )


def parse_reference(text: str, *, default_tag: str | None = DEFAULT_TAG) -> Reference:
    """Parse and normalise ``text``.

    Args:
        text: ``[HOST[:PORT]/]REPO[:TAG][@DIGEST]``; an optional ``docker://`` prefix is
            accepted and dropped.
        default_tag: the tag given to a reference with neither tag nor digest (None: none).

    Raises:
        errdefs.InvalidArgument: empty input, an invalid host, repository component, tag
            or digest, or a name longer than 255 characters.
    """
    if not isinstance(text, str) or not text:
        raise errdefs.InvalidArgument("reference must not be empty")
    raw = text.removeprefix("docker://")
    if raw != raw.strip() or any(c.isspace() for c in raw):
        raise errdefs.InvalidArgument(f"reference {text!r} contains whitespace")
    rest, at, digest_text = raw.partition("@")
    digest = Digest.parse(digest_text) if at else None
    if at and "@" in digest_text:
        raise errdefs.InvalidArgument(f"reference {text!r} has more than one digest")

    first, slash, remainder = rest.partition("/")
    if slash and _looks_like_domain(first):
        domain, path = first, remainder
    else:
        domain, path = DEFAULT_DOMAIN, rest

    tag: str | None = None
    last_slash = path.rfind("/")
    colon = path.rfind(":")
    if colon > last_slash:
        path, tag = path[:colon], path[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise errdefs.InvalidArgument(f"reference {text!r}: invalid tag {tag!r}")

    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if not _DOMAIN.fullmatch(domain):
        raise errdefs.InvalidArgument(f"reference {text!r}: invalid registry host {domain!r}")
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    if not path:
        raise errdefs.InvalidArgument(f"reference {text!r}: repository name must not be empty")
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            if component.lower() != component:
                raise errdefs.InvalidArgument(
                    f"reference {text!r}: repository name must be lowercase"
                )
            raise errdefs.InvalidArgument(
                f"reference {text!r}: invalid repository component {component!r}"
            )
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise errdefs.InvalidArgument(
            f"reference {text!r}: repository name must not be more than "
            f"{NAME_TOTAL_LENGTH_MAX} characters"
        )
    if tag is None and digest is None:
        tag = default_tag
    return Reference(domain, path, tag, digest)


def parse_blob_reference(text: str) -> Reference:
    """Parse ``HOST[:PORT]/REPO@DIGEST`` (a blob); InvalidArgument without a digest."""
    ref = parse_reference(text, default_tag=None)
    if ref.digest is None:
        raise errdefs.InvalidArgument(f"blob reference {text!r} needs @<digest>")
    return ref


__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "DOCKER_API_HOST",
    "Reference",
    "parse_blob_reference",
    "parse_reference",
]
