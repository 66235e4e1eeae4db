"""Child-process entry points for the S3 tests that need real processes (spawned, so
they are importable top-level functions); every wait is bounded."""

from __future__ import annotations

import os
from collections.abc import Mapping
from multiprocessing.synchronize import Barrier

from ingestq.s3 import open_s3_store

WAIT = 120.0


def add_resources(
    url: str,
    root: str,
    env: Mapping[str, str],
    lease_id: str,
    index: int,
    count: int,
    start: Barrier,
) -> None:
    """As a separate host: add ``count`` ingests resources ``p<index>-<j>`` to lease
    ``lease_id`` of namespace ``ingestq``, one change each."""
    os.environ.update(env)
    leases = open_s3_store(url, root, env=env).leases()
    start.wait(WAIT)
    for j in range(count):
        leases.add_resource("ingestq", lease_id, "ingests", f"p{index}-{j}")
