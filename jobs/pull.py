"""What a pull job is in both backends beyond the job interface: the request a
producer's arguments make, and the pull's error when a child fails.

Imports errdefs, fetch (platforms, registry options) and images (the pull values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ingestq import errdefs
from ingestq.fetch import platforms as _platforms
from ingestq.fetch.registry.options import RegistryOptions
from ingestq.images.plan import PlannedBlob
from ingestq.images.request import PullRequest


def pull_request(
    reference: str | PullRequest,
    *,
    platforms: Sequence[str] = (),
    all_platforms: bool = False,
    options: RegistryOptions | None = None,
    name: str | None = None,
) -> PullRequest:
    """The validated request for ``reference`` (or a full :class:`PullRequest`, whose
    other arguments are then ignored). Without ``platforms`` (and ``all_platforms``)
    the platform of this host is pulled, wherever the pull runs.

    Raises InvalidArgument for a malformed reference, platform or request.
    """
    request = (
        reference
        if isinstance(reference, PullRequest)
        else PullRequest(
            reference, tuple(platforms), all_platforms, options or RegistryOptions(), name
        )
    )
    request.validate()
    if not request.platforms and not request.all_platforms:
        # The default platform is the one of the host that asks, not of the worker.
        request = replace(request, platforms=(str(_platforms.host()),))
    return request


def child_error(plan_name: str, blob: PlannedBlob, err: BaseException) -> errdefs.ErrdefsError:
    """``err`` of a child, as the pull's error: same kind, ``pull <name>: <ref>: ...``."""
    return errdefs.wrap(err, f"pull {plan_name}: {blob.ref}")


__all__ = ["child_error", "pull_request"]
