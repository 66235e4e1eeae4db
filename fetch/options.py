"""What the fetching layer takes from the process's configuration: :class:`FetchOptions`.

A frozen value, so :mod:`ingestq.fetch` never reads the environment or the queue's
settings itself; ``jobs.config.Settings.fetch_options()`` builds it for workers and the
embedded runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingestq.fetch.httpio import LowSpeed


@dataclass(frozen=True)
class FetchOptions:
    """How sources made from specs (:func:`ingestq.fetch.specs.source_from_spec`) reach
    their bytes.

    Attributes:
        file_roots: the directories file (and OCI layout) sources may read beneath;
            None means no restriction (a caller reading its own files with its own
            rights), ``()`` refuses every file.
        http_connect_timeout: seconds to connect (and finish the TLS handshake).
        http_read_timeout: seconds a read may stall before it is Unavailable.
        http_max_redirects: redirects followed per request; more is FailedPrecondition.
        http_low_speed_limit, http_low_speed_time: curl's low-speed rule for HTTP and
            registry bodies: averaging fewer than ``limit`` bytes/s over ``time``
            seconds is Unavailable (retried; the retry resumes). Either 0 disables it.
    """

    file_roots: tuple[Path, ...] | None = None
    http_connect_timeout: float = 10.0
    http_read_timeout: float = 60.0
    http_max_redirects: int = 10
    http_low_speed_limit: int = 1024
    http_low_speed_time: float = 60.0

    @property
    def low_speed(self) -> LowSpeed:
        """The low-speed rule of HTTP and registry body streams."""
        from ingestq.fetch.httpio import LowSpeed  # with the HTTP stack, when a body is read

        return LowSpeed(self.http_low_speed_limit, self.http_low_speed_time)


__all__ = ["FetchOptions"]
