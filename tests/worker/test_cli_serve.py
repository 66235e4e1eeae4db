"""``ingestq serve``'s command line: options, usage errors with the InvalidArgument
exit code, and which ref lockers the environment configures."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingestq import errdefs
from ingestq.worker.cli import cli
from ingestq.worker.grpc_server import build_lockers, redis_configured
from tests.tasks.workers import REPO

EXIT_INVALID = 10 + errdefs.InvalidArgument.grpc_code


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["serve", *args], env={"INGESTQ_ADDRESS": None})
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def test_help_lists_the_options() -> None:
    code, out = run("--help")
    assert code == 0
    for option in (
        "--address",
        "--root",
        "--tls-cert",
        "--tls-key",
        "--max-workers",
        "--max-streams",
        "--stream-idle-timeout",
        "INGESTQ_STREAM_IDLE_TIMEOUT",
        "--lock-wait",
        "--log-level",
    ):
        assert option in out


def test_an_address_is_required() -> None:
    code, out = run("--root", "/tmp/unused-root")
    assert code == EXIT_INVALID
    assert "no address: pass --address unix:///PATH.sock: invalid argument" in out


@pytest.mark.parametrize("address", ["nonsense", "127.0.0.1:\u00b2", "127.0.0.1:"])
def test_a_malformed_address_is_invalid(address: str) -> None:
    code, out = run("--address", address, "--root", "/tmp/unused-root")
    assert code == EXIT_INVALID
    assert "is not unix://PATH or HOST:PORT" in out


def test_tls_needs_a_tcp_address(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("not used")
    code, out = run(
        "--address", "unix:///tmp/x.sock", "--tls-cert", str(pem), "--tls-key", str(pem)
    )
    assert code == EXIT_INVALID
    assert "--tls-cert applies to TCP addresses only" in out


def test_the_stream_budget_must_leave_threads_for_unary_calls() -> None:
    code, out = run(
        "--address", "unix:///tmp/unused.sock", "--max-workers", "8", "--max-streams", "8"
    )
    assert code == EXIT_INVALID
    assert "--max-streams 8 must be below --max-workers 8" in out


def test_the_stream_idle_timeout_must_be_positive() -> None:
    code, out = run("--address", "unix:///tmp/unused.sock", "--stream-idle-timeout", "0")
    assert code == 2  # click's usage error
    assert "--stream-idle-timeout" in out


def test_no_redis_means_only_the_host_file_lock() -> None:
    assert not redis_configured({})
    assert build_lockers({}) == []


def test_a_redis_url_adds_the_redis_lease_locker() -> None:
    from ingestq.tasks.lease import RedisLeaseLocker

    env = {"INGESTQ_REDIS_URL": "redis://127.0.0.1:1/0", "INGESTQ_LEASE_TTL": "12"}
    assert redis_configured(env)
    [locker] = build_lockers(env)
    assert isinstance(locker, RedisLeaseLocker)
    assert (locker.url, locker.ttl) == ("redis://127.0.0.1:1/0", 12.0)


def test_a_separate_lock_url_is_used_for_leases() -> None:
    env = {
        "INGESTQ_REDIS_URL": "redis://127.0.0.1:1/0",
        "INGESTQ_LOCK_URL": "redis://127.0.0.1:2/3",
    }
    [locker] = build_lockers(env)
    assert locker.url == "redis://127.0.0.1:2/3"  # type: ignore[attr-defined]


def test_a_port_in_use_is_one_clear_line_and_the_unavailable_exit_status() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-c", "from ingestq.worker.cli import main; main()", "serve",
             "-a", f"127.0.0.1:{port}"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 10 + errdefs.Unavailable.grpc_code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in lines[0] and "in use" in lines[0]
