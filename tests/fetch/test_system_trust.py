""":class:`ingestq.fetch.httpio.SystemTrustContext`: the default TLS context, which reads
the system's CAs at its first handshake. It must be ``ssl.create_default_context()`` in
every setting but the moment the CAs are read, read them for either way a handshake
starts (a socket or a BIO pair), and survive a fork taken while another thread reads
them. The handshakes against a real TLS server are in ``test_http_tls.py``."""

from __future__ import annotations

import os
import ssl
import threading
from typing import Any

import pytest

from ingestq.fetch.httpio import SystemTrustContext, new_client, ssl_context
from tests.servers.util import forked_exit_code

#: Far longer than loading the CAs takes: a child still running then is stuck.
CHILD_DEADLINE = 30.0

SETTINGS = (
    "protocol", "verify_mode", "check_hostname", "options", "minimum_version",
    "maximum_version", "verify_flags", "post_handshake_auth", "keylog_filename",
    "hostname_checks_common_name", "security_level", "sni_callback",
    "sslsocket_class", "sslobject_class",
)  # fmt: skip


def _settings(ctx: ssl.SSLContext) -> dict[str, object]:
    out: dict[str, object] = {name: getattr(ctx, name) for name in SETTINGS}
    out["ciphers"] = [c["name"] for c in ctx.get_ciphers()]
    return out


@pytest.mark.parametrize("keylog", [None, "keys.log"])
def test_it_is_the_default_context_in_every_setting_but_when_cas_are_read(
    keylog: str | None, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    if keylog is None:
        monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    else:
        monkeypatch.setenv("SSLKEYLOGFILE", f"{tmp_path}/{keylog}")
    lazy, default = ssl_context(), ssl.create_default_context()
    assert isinstance(lazy, SystemTrustContext)
    assert _settings(lazy) == _settings(default)
    assert lazy.cert_store_stats()["x509_ca"] == 0


def test_a_handshake_through_a_bio_pair_reads_the_cas_too() -> None:
    ctx = SystemTrustContext()
    ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="registry.example")
    assert ctx.cert_store_stats() == ssl.create_default_context().cert_store_stats()


def test_it_is_only_a_client_context() -> None:
    assert SystemTrustContext(ssl.PROTOCOL_TLS_CLIENT).verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(TypeError, match="client context"):
        SystemTrustContext(ssl.PROTOCOL_TLS_SERVER)


def test_a_fork_taken_while_another_thread_reads_the_cas_does_not_hang_the_child() -> None:
    """The lock a reading thread held when the process forked is not the child's."""
    ctx = SystemTrustContext()
    held, release = threading.Event(), threading.Event()

    def reader() -> None:  # stands for a thread in the middle of its load
        with SystemTrustContext._trust_mutex:
            held.set()
            release.wait(CHILD_DEADLINE)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert held.wait(CHILD_DEADLINE)
        pid = os.fork()
        if pid == 0:  # the child: one handshake's start, then out
            try:
                ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="x.example")
                os._exit(0 if ctx.cert_store_stats()["x509_ca"] else 3)
            except BaseException:
                os._exit(2)
        assert forked_exit_code(pid, CHILD_DEADLINE, "the forked child hung on the trust lock") == 0
    finally:
        release.set()
        thread.join()


def test_a_default_client_trusts_the_system_not_certifi(monkeypatch: pytest.MonkeyPatch) -> None:
    """``new_client()`` (an HTTP source's client) trusts what the registry client trusts:
    a :class:`SystemTrustContext`, so it parses no CAs when it is made, and it never
    reads certifi's bundle (httpx's default)."""
    import certifi

    def no_certifi() -> str:
        raise AssertionError("certifi's bundle was read")

    made: list[ssl.SSLContext] = []
    create = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(create(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(certifi, "where", no_certifi)
    monkeypatch.setattr(ssl, "create_default_context", counted)
    with new_client():
        assert made == []
    with new_client(verify=ssl_context()):
        assert made == []
