"""How to reach registries: :class:`RegistryOptions`, plain data that travels in a job.

Kept apart from the client (:mod:`ingestq.fetch.registry.client`, which loads httpx), so
a producer that only queues a pull does not load the HTTP stack. Imports errdefs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ingestq import errdefs

#: The ``type`` of a registry blob's source spec (:func:`ingestq.fetch.specs.source_from_spec`).
SPEC_KIND = "registry"


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries. Plain data, so it can travel in a job (no secrets).

    Attributes:
        plain_http: True: ``http://`` for every host; False: ``https://`` for every
            host; None (default): ``http://`` for loopback hosts only (containerd's rule).
        insecure_skip_verify: do not verify TLS certificates.
        ca_bundle: a PEM file of CA certificates to trust (instead of the system's).
        client_cert, client_key: PEM files for TLS client authentication.
        connect_timeout, read_timeout: seconds.
        max_redirects: redirects followed per request.
        retries: how often a 429/503 with ``Retry-After`` is retried in place.
        max_retry_wait: the longest ``Retry-After`` waited in place (seconds); a longer
            one is raised as Unavailable with the ``retry_after`` detail.
        auth_files: docker ``config.json`` paths for credentials; None means the
            default places (:func:`~ingestq.fetch.registry.auth.default_docker_config_paths`).
    """

    plain_http: bool | None = None
    insecure_skip_verify: bool = False
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_redirects: int = 10
    retries: int = 3
    max_retry_wait: float = 30.0
    auth_files: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for job arguments)."""
        out = asdict(self)
        if self.auth_files is not None:
            out["auth_files"] = list(self.auth_files)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RegistryOptions:
        """The inverse of :meth:`to_dict`; unknown keys are InvalidArgument."""
        if not data:
            return cls()
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise errdefs.InvalidArgument(f"unknown registry options: {sorted(unknown)}")
        values = dict(data)
        if values.get("auth_files") is not None:
            values["auth_files"] = tuple(str(p) for p in values["auth_files"])
        return cls(**values)


__all__ = ["SPEC_KIND", "RegistryOptions"]
