"""``rediss://`` with a password: a worker, the producer, leases and the status board
all speak TLS to a real redis-server whose plain port is closed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from ingestq.tasks.lease import RedisLeaseLocker
from tests.servers.redis_server import RedisFactory
from tests.servers.util import free_port
from tests.tasks.conftest import ClusterFactory


@pytest.fixture
def tls_url(redis_factory: RedisFactory, tmp_path: Path) -> str:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    tls_port = free_port()
    server = redis_factory(
        extra_args=["--tls-port", str(tls_port), "--tls-cert-file", str(cert),
                    "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                    "--tls-auth-clients", "no"],
    )  # fmt: skip
    plain = redis.Redis.from_url(server.url)
    plain.config_set("requirepass", "s3cret")
    plain.config_set("port", "0")  # from now on, TLS only
    return f"rediss://:s3cret@127.0.0.1:{tls_port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"


def test_leases_work_over_tls_with_a_password(tls_url: str) -> None:
    locker = RedisLeaseLocker(tls_url, ttl=5)
    lease = locker.try_lock("ref-tls", "me")
    holder = locker.holder("ref-tls")
    assert holder is not None and holder.fence == lease.fence
    lease.release()
    assert locker.holder("ref-tls") is None


def test_a_worker_and_producer_over_tls(
    tls_url: str, cluster_factory: ClusterFactory, store_root: Path
) -> None:
    cluster = cluster_factory(tls_url, store_root)
    cluster.start_worker()
    cluster.ingest_a_file()
