"""A producer talks to the Redis it is configured with and to nothing else.

The producer's Celery app has no result backend (it reads results itself). Before
``make_app(results=False)`` its app still carried ingestq's Redis result backend, which,
given no URL, subscribed to every sent job's result channel on ``localhost:6379``: on a
host with no Redis there, every enqueue failed after about 20 s of retries, and on this
machine kind (which runs one there) it quietly used a server nobody configured. The
producer runs in a child process with an audit hook that records every socket it
connects, so the check sees what the real client does. Queueing a pull contacts no
registry either: the workers do that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

_PRODUCER = """
import json, sys

addresses = []


def audit(event, args):
    if event == "socket.connect":
        addresses.append(args[1])


sys.addaudithook(audit)
from ingestq.tasks.client import connect, enqueue_ingest, enqueue_pull

client = connect()
ingest = enqueue_ingest(sys.argv[1], client=client)
pull = enqueue_pull(sys.argv[2], client=client)
states = [ingest.state.value, pull.state.value]
client.close()
print(json.dumps({"addresses": [list(a) if isinstance(a, tuple) else a for a in addresses],
                  "states": states}))
"""


def test_a_producer_connects_only_to_its_redis(redis_url: str, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 4096)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTQ_")}
    env.update(INGESTQ_REDIS_URL=redis_url, INGESTQ_ROOT=str(tmp_path / "root"))
    done = subprocess.run(
        [sys.executable, "-c", _PRODUCER, str(blob), "127.0.0.1:9/some/image:v1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    redis = urlsplit(redis_url)
    assert seen["addresses"], "the producer connected to nothing"
    for address in seen["addresses"]:
        assert [address[0], address[1]] == [redis.hostname, redis.port], seen
    assert seen["states"] == ["queued", "queued"]
