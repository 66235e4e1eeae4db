"""With Redis configured, ``ingestq serve`` takes the same Redis lease as workers on
other hosts: a ref leased elsewhere makes ``ctr content ingest`` wait, then succeed."""

from __future__ import annotations

import hashlib
import random
import subprocess
from pathlib import Path

import pytest

from ingestq.tasks.lease import RedisLeaseLocker
from tests.api.conftest import Served, ServerFactory
from tests.servers.util import require_binary, wait_until


def locked_lines(served: Served, ref: str) -> int:
    return sum(f"ref {ref} locked for" in line for line in served.log().splitlines())


@pytest.mark.slow
def test_a_ref_leased_on_another_host_is_waited_for(
    serve_process_factory: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    served = serve_process_factory(
        "--log-level", "debug", "--lock-wait", "0", env={"INGESTQ_REDIS_URL": redis_url}
    )
    other_host = RedisLeaseLocker(redis_url, ttl=30.0)
    lease = other_host.try_lock("layer-sha256:contended", "other-host/1/abc")
    data = random.Random(9).randbytes(50_000)
    src = tmp_path / "src"
    src.write_bytes(data)
    argv = [
        require_binary("ctr"),
        "-a",
        str(served.socket),
        "content",
        "ingest",
        "layer-sha256:contended",
    ]
    with open(src, "rb") as stdin:
        ctr = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(
            lambda: locked_lines(served, "layer-sha256:contended") >= 2,
            30.0,
            "ctr to be refused the Redis-leased ref",
        )
        assert ctr.poll() is None
        lease.release()
        out, err = ctr.communicate(timeout=30)
    finally:
        lease.release()
        if ctr.poll() is None:
            ctr.kill()
            ctr.wait()
    assert (ctr.returncode, out, err) == (0, b"", b"")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert served.ctr("content", "get", digest).stdout == data
