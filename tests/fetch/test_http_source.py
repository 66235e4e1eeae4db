"""The HTTP source against a real server on 127.0.0.1 that misbehaves on purpose: each
case gives the right errdefs kind, and nothing wrong is ever committed."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ingestq import errdefs
from ingestq.fetch.http import HttpSource
from ingestq.fetch.httpio import new_client
from ingestq.fetch.options import FetchOptions
from ingestq.fetch.specs import source_from_spec
from ingestq.ingest.attempt import ingest_once
from ingestq.ingest.outcome import RefBusy
from ingestq.ingest.request import IngestRequest, make_request
from ingestq.store.digest import Digest
from ingestq.store.local import LocalStore
from ingestq.store.resume import ResumeHints
from ingestq.store.values import Descriptor
from tests.servers.util import wait_until
from tests.tasks.blobserver import Behaviour, BlobServer

MiB = 1 << 20


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    c = new_client(connect_timeout=2, read_timeout=0.5, max_redirects=5)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    # The resumable writer path (what prefixes are kept is under test here).
    return LocalStore(tmp_path / "store", fsync=False, small_blob_max=0)


def _request(url: str, b: Behaviour, *, digest: bool = True, size: bool = True) -> IngestRequest:
    return make_request(
        {"type": "http", "url": url}, url,
        digest=b.digest if digest else None, size=len(b.data) if size else 0,
    )  # fmt: skip


def _committed(store: LocalStore) -> list[str]:
    return [str(i.digest) for i in store.walk()]


def _partial(store: LocalStore, req: IngestRequest, data: bytes, etag: str | None) -> None:
    """Leave an ingest holding ``data`` as if an earlier attempt stopped there."""
    with store.writer(req.ref, req.expected) as w:
        w.write(data)
    if etag is not None:
        ResumeHints(store.root).put(req.ref, str(req.source["url"]), etag)


def _run(store: LocalStore, client: httpx.Client, req: IngestRequest) -> object:
    source = HttpSource(str(req.source["url"]), client)
    return ingest_once(store, source, req)


def test_a_wrong_content_range_is_failed_precondition_and_keeps_the_prefix(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    b = Behaviour(data=os.urandom(2 * MiB), wrong_range=True)
    url = blob_server.add("/x", b)
    req = _request(url, b)
    _partial(store, req, b.data[:MiB], b.etag)
    with pytest.raises(errdefs.FailedPrecondition, match="unhandled content range"):
        _run(store, client, req)
    assert _committed(store) == []
    assert store.status(req.ref).offset == MiB
    # The server logs a request once its body is written (or the client hung up).
    (logged,) = wait_until(lambda: blob_server.requests_for("/x") or None, 30, "the request log")
    assert logged.range == f"bytes={MiB}-" and logged.if_range == b.etag


def test_a_body_cut_at_an_odd_offset_is_data_loss_keeping_every_byte_sent_and_resumes(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    cut = MiB + MiB // 2 + 17
    b = Behaviour(data=os.urandom(3 * MiB), truncate_at=cut)
    url = blob_server.add("/x", b)
    req = _request(url, b)
    with pytest.raises(errdefs.DataLoss, match="body shorter than announced"):
        _run(store, client, req)
    assert _committed(store) == []
    kept = store.status(req.ref).offset
    assert kept == blob_server.bytes_served("/x") == cut
    b.truncate_at = None
    result = _run(store, client, req)
    assert _committed(store) == [b.digest]
    assert blob_server.requests_for("/x")[-1].range == f"bytes={kept}-"
    assert result.resumed_from == kept  # type: ignore[attr-defined]


def test_a_server_ignoring_range_restarts_the_ingest_from_zero(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    b = Behaviour(data=os.urandom(2 * MiB), ignore_range=True)
    url = blob_server.add("/x", b)
    req = _request(url, b)
    _partial(store, req, b.data[:MiB], b.etag)
    _run(store, client, req)
    assert _committed(store) == [b.digest]
    (logged,) = blob_server.requests_for("/x")
    assert logged.range == f"bytes={MiB}-" and logged.status == 200
    assert logged.sent == len(b.data)


def test_a_changed_resource_fails_if_range_and_restarts(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    old = os.urandom(2 * MiB)
    b = Behaviour(data=os.urandom(2 * MiB))
    url = blob_server.add("/x", b)
    req = _request(url, b, digest=False, size=False)
    _partial(store, req, old[:MiB], '"old-etag"')
    _run(store, client, req)
    assert _committed(store) == [b.digest]  # never a splice of old and new bytes
    (logged,) = blob_server.requests_for("/x")
    assert logged.if_range == '"old-etag"' and logged.status == 200


def test_a_resume_without_a_recorded_validator_or_digest_restarts(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    b = Behaviour(data=os.urandom(2 * MiB))
    url = blob_server.add("/x", b)
    req = _request(url, b, digest=False, size=False)
    _partial(store, req, os.urandom(MiB), None)
    _run(store, client, req)
    assert _committed(store) == [b.digest]
    assert blob_server.requests_for("/x")[0].range is None


def test_a_redirect_loop_is_failed_precondition(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    url = blob_server.add("/loop", Behaviour(redirect_to="/loop"))
    req = make_request({"type": "http", "url": url}, url)
    with pytest.raises(errdefs.FailedPrecondition, match="too many redirects"):
        _run(store, client, req)
    assert len(blob_server.requests_for("/loop")) == 6  # first + 5 redirects
    assert _committed(store) == [] and store.list_statuses() == []


def test_a_stalled_body_is_unavailable_and_commits_nothing(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    b = Behaviour(data=os.urandom(2 * MiB), stall_at=MiB)
    url = blob_server.add("/x", b)
    with pytest.raises(errdefs.Unavailable, match="timed out"):
        _run(store, client, _request(url, b))
    assert _committed(store) == []


def test_429_with_retry_after_is_unavailable_carrying_the_delay(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    b = Behaviour(data=b"x", status=429, headers={"Retry-After": "7"})
    url = blob_server.add("/x", b)
    with pytest.raises(errdefs.Unavailable) as caught:
        _run(store, client, _request(url, b))
    assert caught.value.details["retry_after"] == "7"
    assert caught.value.details["status"] == "429"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (404, errdefs.NotFound),
        (410, errdefs.NotFound),
        (401, errdefs.Unauthenticated),
        (403, errdefs.PermissionDenied),
        (400, errdefs.InvalidArgument),
        (500, errdefs.Unavailable),
        (502, errdefs.Unavailable),
        (503, errdefs.Unavailable),
        (501, errdefs.Unimplemented),
        (505, errdefs.Unknown),
    ],
)
def test_status_codes_map_to_kinds(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client, status: int,
    kind: type[errdefs.ErrdefsError],
) -> None:  # fmt: skip
    b = Behaviour(data=b"abc", status=status)
    url = blob_server.add("/x", b)
    with pytest.raises(kind) as caught:
        _run(store, client, _request(url, b))
    assert type(caught.value) is kind and f"HTTP {status}" in str(caught.value)
    assert _committed(store) == [] and store.list_statuses() == []


def test_a_body_longer_than_expected_is_failed_precondition(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    b = Behaviour(data=os.urandom(MiB), extra_bytes=b"trailing junk")
    url = blob_server.add("/x", b)
    with pytest.raises(errdefs.FailedPrecondition, match="expected"):
        _run(store, client, _request(url, b))
    assert _committed(store) == [] and store.list_statuses() == []


def test_a_body_longer_than_expected_without_a_size_fails_the_digest_and_is_dropped(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    b = Behaviour(data=os.urandom(MiB), extra_bytes=b"trailing junk")
    url = blob_server.add("/x", b)
    with pytest.raises(errdefs.FailedPrecondition, match="unexpected commit digest"):
        _run(store, client, _request(url, b, size=False))
    assert _committed(store) == [] and store.list_statuses() == []


def test_a_body_announced_shorter_than_expected_is_data_loss(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    data = os.urandom(MiB)
    b = Behaviour(data=data[:-10])
    url = blob_server.add("/x", b)
    req = make_request(
        {"type": "http", "url": url}, url,
        digest="sha256:" + hashlib.sha256(data).hexdigest(), size=len(data),
    )  # fmt: skip
    with pytest.raises(errdefs.DataLoss):
        _run(store, client, req)
    assert _committed(store) == []


def test_a_resume_asks_for_the_rest_with_if_range_and_commits(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    b = Behaviour(data=os.urandom(3 * MiB))
    url = blob_server.add("/x", b)
    req = _request(url, b)
    _partial(store, req, b.data[: MiB + 5], b.etag)
    _run(store, client, req)
    assert _committed(store) == [b.digest]
    (logged,) = blob_server.requests_for("/x")
    assert (logged.range, logged.if_range, logged.status) == (f"bytes={MiB + 5}-", b.etag, 206)
    assert logged.sent == len(b.data) - MiB - 5


def test_a_locked_ref_is_ref_busy_naming_the_holder(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    b = Behaviour(data=b"abc")
    url = blob_server.add("/x", b)
    req = _request(url, b)
    desc = Descriptor(Digest.parse(b.digest), 3)
    with store.writer(req.ref, desc), pytest.raises(RefBusy) as caught:
        _run(store, client, req)
    assert "locked" in str(caught.value.error) and caught.value.holder is not None
    assert blob_server.requests_for("/x") == []


def _spec_run(store: LocalStore, options: FetchOptions, req: IngestRequest) -> object:
    return ingest_once(store, source_from_spec(req.source, options), req)


def test_a_slow_loris_body_is_unavailable_by_the_low_speed_rule_and_keeps_what_arrived(
    blob_server: BlobServer, store: LocalStore
) -> None:
    b = Behaviour(data=os.urandom(64 * 1024), trickle=(1, 0.25))
    url = blob_server.add("/slow", b)
    req = _request(url, b)
    options = FetchOptions(http_read_timeout=5, http_low_speed_limit=1024, http_low_speed_time=2)
    started = time.monotonic()
    with pytest.raises(errdefs.Unavailable, match="slower than 1024 bytes/s over 2 s") as caught:
        _spec_run(store, options, req)
    assert time.monotonic() - started < 30  # it used to hold the ingest forever
    assert caught.value.details["error"] == "LowSpeed"
    assert (caught.value.details["limit"], caught.value.details["time"]) == ("1024", "2")
    kept = store.status(req.ref).offset
    wait_until(lambda: blob_server.requests_for("/slow"), 10, "the server logs the request")
    assert 0 < kept <= blob_server.bytes_served("/slow")
    b.trickle = None
    result = _spec_run(store, options, req)
    assert result.resumed_from == kept  # type: ignore[attr-defined]
    assert _committed(store) == [b.digest]
    assert blob_server.requests_for("/slow")[-1].range == f"bytes={kept}-"


@pytest.mark.parametrize(("limit", "seconds"), [(0, 0.5), (1024, 0.0)])
def test_a_low_speed_limit_or_time_of_zero_disables_the_rule(
    blob_server: BlobServer, store: LocalStore, limit: int, seconds: float
) -> None:
    b = Behaviour(data=os.urandom(6), trickle=(1, 0.2))  # 1 s, slower than any window
    url = blob_server.add("/slow", b)
    options = FetchOptions(http_low_speed_limit=limit, http_low_speed_time=seconds)
    _spec_run(store, options, _request(url, b))
    assert _committed(store) == [b.digest]


def test_a_resume_answered_nothing_left_before_the_announced_total_is_data_loss(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    b = Behaviour(data=os.urandom(3 * MiB), truncate_at=2 * MiB + 5)
    url = blob_server.add("/x", b)
    req = _request(url, b, digest=False, size=False)
    with pytest.raises(errdefs.DataLoss):
        _run(store, client, req)
    kept = store.status(req.ref).offset
    b.truncate_at, b.unsatisfiable_total = None, kept  # "416 bytes */<offset>": nothing left
    with pytest.raises(errdefs.DataLoss, match=f"has {kept} bytes, {3 * MiB} announced"):
        _run(store, client, req)
    assert _committed(store) == []  # the prefix is never committed as the blob
    assert store.status(req.ref).offset == kept
    assert [r.status for r in blob_server.requests_for("/x")] == [200, 416]
    b.unsatisfiable_total = None
    result = _run(store, client, req)
    assert result.resumed_from == kept  # type: ignore[attr-defined]
    assert _committed(store) == [b.digest]


def test_a_negative_content_length_is_failed_precondition_not_retried(
    blob_server: BlobServer, store: LocalStore, client: httpx.Client
) -> None:
    b = Behaviour(data=b"0123456789", announce_length=-1)
    url = blob_server.add("/x", b)
    with pytest.raises(errdefs.FailedPrecondition, match="malformed Content-Length"):
        _run(store, client, _request(url, b, digest=False, size=False))
    assert _committed(store) == [] and store.list_statuses() == []


def test_a_large_body_skips_h11_intact_and_closes_its_connection_a_small_one_keeps_it(
    blob_server: BlobServer,
) -> None:
    from ingestq.fetch import httpio

    small = Behaviour(data=os.urandom(1000))
    big = Behaviour(data=os.urandom(3 * MiB + 17))
    small_url, big_url = blob_server.add("/small", small), blob_server.add("/big", big)
    with new_client() as client:
        for _ in range(2):
            body = httpio.BodyStream(httpio.send(client, "GET", small_url, {}, "GET"), "GET", None)
            assert body.read(-1) == small.data
            body.close()
        assert blob_server.connections == 1  # kept alive through h11
        for _ in range(2):
            response = httpio.send(client, "GET", big_url, {}, "GET")
            body = httpio.BodyStream(response, "GET", len(big.data))
            pieces = []
            while piece := body.read(httpio.RAW_BODY_MIN):
                pieces.append(piece)
            body.close()
            assert b"".join(pieces) == big.data
        # The first large body came on the kept connection and was read from the socket
        # past h11, which then dropped the connection (it never saw the body end): the
        # second one needed a new connection.
        assert blob_server.connections == 2
