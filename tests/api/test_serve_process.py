"""``ingestq serve`` as a real process: the unix socket's mode, TCP (and TLS) only when
asked, a clean stop on SIGTERM, and refusing a socket another server answers on."""

from __future__ import annotations

import hashlib
import shutil
import socket as sockets
import stat
import subprocess
from pathlib import Path

import grpc
import pytest

from ingestq import errdefs
from ingestq.api.client import GrpcStore
from tests.api.conftest import ServerFactory, ingestq_argv, short_dir
from tests.api.wire import WriteStream, status_of, write
from tests.api.wire import stat as stat_request
from tests.servers.util import free_port, require_binary

EXIT_UNAVAILABLE = 10 + errdefs.Unavailable.grpc_code


def serving_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("ingestq: serving on ")]


def test_unix_socket_mode_and_nothing_else(
    serve_process_factory: ServerFactory, tmp_path: Path
) -> None:
    served = serve_process_factory()
    assert stat.S_ISSOCK(served.socket.stat().st_mode)
    assert stat.S_IMODE(served.socket.stat().st_mode) == 0o660
    assert serving_lines(served.log()) == [f"ingestq: serving on unix://{served.socket}"]
    data = tmp_path / "blob"
    data.write_bytes(b"over the socket")
    done = served.ctr("content", "ingest", "via-process", stdin_path=data)
    assert done.returncode == 0, done.stderr
    digest = "sha256:" + hashlib.sha256(b"over the socket").hexdigest()
    assert served.ctr("content", "get", digest).stdout == b"over the socket"


def test_sigterm_stops_cleanly_and_removes_the_socket(
    serve_process_factory: ServerFactory,
) -> None:
    served = serve_process_factory()
    assert served.process is not None
    assert served.process.stop(timeout=15) == 0
    assert not served.socket.exists()


def test_tcp_only_when_asked(serve_process_factory: ServerFactory) -> None:
    port = free_port()
    served = serve_process_factory("--address", f"127.0.0.1:{port}")
    assert f"ingestq: serving on 127.0.0.1:{port}" in serving_lines(served.log())
    with GrpcStore(f"127.0.0.1:{port}") as client:
        assert client.list_statuses() == []


def make_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            require_binary("openssl"),
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_on_tcp(serve_process_factory: ServerFactory, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    port = free_port()
    serve_process_factory(
        "--address", f"127.0.0.1:{port}", "--tls-cert", str(cert), "--tls-key", str(key)
    )
    creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        assert GrpcStore(channel).list_statuses() == []
    with GrpcStore(f"127.0.0.1:{port}", timeout=5) as plain, pytest.raises(errdefs.Unavailable):
        plain.list_statuses()


@pytest.mark.slow
def test_a_socket_another_server_answers_on_is_refused(
    serve_process_factory: ServerFactory, tmp_path: Path
) -> None:
    served = serve_process_factory()
    done = subprocess.run(
        ingestq_argv(
            "serve", "--address", f"unix://{served.socket}", "--root", str(tmp_path / "other")
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == EXIT_UNAVAILABLE
    assert f"another server listens on {served.socket}" in done.stderr
    assert served.ctr("content", "ls").returncode == 0  # the first server is untouched


def test_a_stale_socket_file_is_replaced(serve_process_factory: ServerFactory) -> None:
    directory = short_dir()
    stale = directory / "ingestq.sock"
    with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as s:
        s.bind(str(stale))  # a socket file nobody listens on, as a killed server leaves
    try:
        served = serve_process_factory("--address", f"unix://{stale}")
        assert f"ingestq: serving on unix://{stale}" in serving_lines(served.log())
        with GrpcStore(f"unix://{stale}") as client:
            assert client.list_statuses() == []
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_stream_bounds_from_the_command_line_and_environment(
    serve_process_factory: ServerFactory,
) -> None:
    """``--max-streams`` and ``$INGESTQ_STREAM_IDLE_TIMEOUT`` reach the server: a second
    stream is refused at once, and the idle one ends keeping its data."""
    served = serve_process_factory("--max-streams", "1", env={"INGESTQ_STREAM_IDLE_TIMEOUT": "0.5"})
    with served.channel() as ch:
        idle = WriteStream(ch)
        idle.send(stat_request("idle-served"))
        idle.send(write(0, b"kept"))
        with pytest.raises(grpc.RpcError) as exc:
            WriteStream(ch).send(stat_request("second"))
        assert status_of(exc.value)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert status_of(idle.wait_end()) == (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "ref idle-served kept at offset 4 for a resume: Write stream idle: no message "
            "from the client for 0.5s: context deadline exceeded",
        )
    assert served.client().status("idle-served").offset == 4
