"""What the S3 store does beyond the contract, against a real SeaweedFS: a killed
writer's ingest is continued with the next part (its prefix's hash recovered and
checked against the server's parts), nothing is left behind by commit or abort, a
publish is a conditional create (one of several writers of a digest wins), label
updates are conditional too, and S3 failures map to errdefs kinds."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from ingestq import errdefs
from ingestq.ingest.attempt import ingest_once
from ingestq.ingest.request import make_request
from ingestq.s3 import S3Location, S3Store
from ingestq.s3.client import MAX_POOL_CONNECTIONS, make_client
from ingestq.s3.store import MIN_PART_SIZE
from ingestq.store import Descriptor, Digest, Info, write_blob
from ingestq.store.testing import FakeRefLocker
from tests.ingest.helpers import BytesSource
from tests.servers.seaweed import S3Endpoint, SeaweedServer
from tests.servers.util import free_port, wait_until

PART = MIN_PART_SIZE
DATA = random.Random(7).randbytes(3 * PART + 1024 * 1024)  # three parts and a tail


def desc(data: bytes) -> Descriptor:
    return Descriptor(Digest.from_bytes(data), len(data))


@pytest.fixture
def location(s3_bucket: str, s3_prefix: str) -> S3Location:
    return S3Location(s3_bucket, s3_prefix)


@pytest.fixture
def store(s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path) -> S3Store:
    return S3Store(location, s3_endpoint.client(), tmp_path, locker=FakeRefLocker(), part_size=PART)


def keys(client: Any, location: S3Location) -> list[str]:
    """Every object key under the prefix, without it."""
    found = client.list_objects_v2(Bucket=location.bucket, Prefix=location.key("")).get("Contents")
    return sorted(o["Key"][len(location.key("")) :] for o in found or ())


def uploads(client: Any, location: S3Location) -> list[dict[str, Any]]:
    """The multipart uploads in progress under the prefix."""
    got = client.list_multipart_uploads(Bucket=location.bucket, Prefix=location.key(""))
    return list(got.get("Uploads") or ())


def parts_of(client: Any, location: S3Location) -> list[int]:
    """The part numbers of the one upload in progress."""
    (up,) = uploads(client, location)
    got = client.list_parts(Bucket=location.bucket, Key=up["Key"], UploadId=up["UploadId"])
    return [p["PartNumber"] for p in got.get("Parts") or ()]


def vouched_parts(client: Any, location: S3Location, ref: str) -> tuple[int, int]:
    """How many parts ``ref``'s ingest record vouches for, and its stored tail."""
    raw = client.get_object(Bucket=location.bucket, Key=location.ingest(ref))["Body"].read()
    record = json.loads(raw)
    return len((record["upload"] or {}).get("parts", ())), record["tail"]


_KILLED_WRITER = """
import sys
from ingestq.s3 import S3Location, S3Store
from ingestq.s3.client import make_client
from ingestq.store import Descriptor, Digest
import random
bucket, prefix, root, part, size, upto = sys.argv[1:7]
data = random.Random(7).randbytes(int(size))
store = S3Store(S3Location(bucket, prefix), make_client(), root, part_size=int(part))
w = store.writer("killed", Descriptor(Digest.from_bytes(data), len(data)))
w.write(data[: int(upto)])
print("written", flush=True)
sys.stdin.read()
"""


def test_a_killed_writer_is_continued_with_the_next_part(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    env = {**os.environ, **s3_endpoint.env()}
    upto = 2 * PART + 1024 * 1024  # two parts uploaded, 1 MiB buffered
    args = [location.bucket, location.prefix, str(tmp_path), str(PART), str(len(DATA)), str(upto)]
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"written\n"
        client = s3_endpoint.client()
        wait_until(
            lambda: vouched_parts(client, location, "killed") == (2, 0),
            30,
            "the record vouches for the two uploaded parts",
        )
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    # Same host: the kernel released the dead writer's file lock.
    store = S3Store(location, s3_endpoint.client(), tmp_path, part_size=PART)
    client = s3_endpoint.client()
    st = store.status("killed")
    assert (st.offset, st.total, st.holder) == (2 * PART, len(DATA), None)
    assert parts_of(client, location) == [1, 2]
    with store.writer("killed", desc(DATA)) as w:
        assert w.status().offset == 2 * PART  # the buffered tail died with the writer
        assert w.digest() == Digest.from_bytes(DATA[: 2 * PART])
        w.write(DATA[2 * PART :])
        # The next part (uploaded in the background), not a restart.
        wait_until(lambda: parts_of(client, location) == [1, 2, 3], 30, "part 3 uploaded")
        info = w.commit(len(DATA), Digest.from_bytes(DATA))
    with store.reader_at(info.digest) as ra:
        assert hashlib.sha256(ra.read_at(0, ra.size)).digest() == hashlib.sha256(DATA).digest()
    assert uploads(client, location) == []


_KILLED_AFTER_RESUME = """
import sys
from ingestq.s3 import S3Location, S3Store
from ingestq.s3.client import make_client
from ingestq.store import Descriptor, Digest
import random
bucket, prefix, root, part, size = sys.argv[1:6]
part = int(part)
data = random.Random(7).randbytes(int(size))
desc = Descriptor(Digest.from_bytes(data), len(data))
store = S3Store(S3Location(bucket, prefix), make_client(), root, part_size=part)
w = store.writer("resumed", desc)
w.write(data[:1024])
w.close()  # 1 KiB kept as the tail
w = store.writer("resumed", desc)
w.write(data[1024 : part + 2048])  # the tail and more go into part 1; 2 KiB buffered
print("written", flush=True)
sys.stdin.read()
"""


def test_a_stored_tail_that_went_into_a_part_is_not_used_again(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    env = {**os.environ, **s3_endpoint.env()}
    args = [location.bucket, location.prefix, str(tmp_path), str(PART), str(len(DATA))]
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_AFTER_RESUME, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"written\n"
        client = s3_endpoint.client()
        wait_until(
            lambda: vouched_parts(client, location, "resumed") == (1, 0),
            30,
            "the record vouches for part 1 (holding the tail) and no longer for the tail",
        )
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    store = S3Store(location, s3_endpoint.client(), tmp_path, part_size=PART)
    with store.writer("resumed", desc(DATA)) as w:
        assert w.status().offset == PART
        assert w.digest() == Digest.from_bytes(DATA[:PART])
        w.write(DATA[PART:])
        w.commit(len(DATA), Digest.from_bytes(DATA))
    assert keys(s3_endpoint.client(), location) == [
        f"blobs/sha256/{Digest.from_bytes(DATA).encoded}",
        f"meta/sha256/{Digest.from_bytes(DATA).encoded}.json",
    ]


def test_a_record_vouching_for_parts_the_server_lacks_is_not_trusted(
    store: S3Store, s3_endpoint: S3Endpoint, location: S3Location
) -> None:
    """The record says part 2 has an ETag the server does not hold for it: the hash
    state cannot be trusted, the upload is aborted and the ingest starts over."""
    client = s3_endpoint.client()
    w = store.writer("lying", desc(DATA))
    w.write(DATA[: 2 * PART])
    w.close()
    key = location.ingest("lying")
    record = json.loads(client.get_object(Bucket=location.bucket, Key=key)["Body"].read())
    record["upload"]["parts"][1][2] = "0" * 32
    client.put_object(Bucket=location.bucket, Key=key, Body=json.dumps(record).encode())
    assert store.status("lying").offset == 2 * PART  # what the record claims
    with store.writer("lying", desc(DATA)) as w:
        assert (w.status().offset, w.digest()) == (0, Digest.from_bytes(b""))
        assert uploads(client, location) == []  # the untrusted upload was aborted
        w.write(DATA)
        info = w.commit(len(DATA), Digest.from_bytes(DATA))
    assert info.size == len(DATA)
    assert uploads(client, location) == []


def test_an_upload_aborted_behind_the_record_starts_over(
    store: S3Store, s3_endpoint: S3Endpoint, location: S3Location
) -> None:
    client = s3_endpoint.client()
    w = store.writer("vanished", desc(DATA))
    w.write(DATA[: PART + 10])
    w.close()
    (up,) = uploads(client, location)
    client.abort_multipart_upload(Bucket=location.bucket, Key=up["Key"], UploadId=up["UploadId"])
    with store.writer("vanished", desc(DATA)) as w:
        assert w.status().offset == 0
        w.write(DATA)
        w.commit(len(DATA), Digest.from_bytes(DATA))


def test_a_part_overwritten_behind_the_record_never_reaches_the_blob(
    store: S3Store, s3_endpoint: S3Endpoint, location: S3Location
) -> None:
    """Another client uploads other bytes as part 2. S3 then holds only those (the
    record's ETag is gone: start over); SeaweedFS keeps both and completes with the
    ETag it is given (continue). Either way the blob is exactly the data."""
    client = s3_endpoint.client()
    w = store.writer("tampered", desc(DATA))
    w.write(DATA[: 2 * PART])
    w.close()
    (up,) = uploads(client, location)
    client.upload_part(
        Bucket=location.bucket,
        Key=up["Key"],
        UploadId=up["UploadId"],
        PartNumber=2,
        Body=b"x" * PART,
    )
    with store.writer("tampered", desc(DATA)) as w:
        offset = w.status().offset
        assert offset in (0, 2 * PART)
        assert w.digest() == Digest.from_bytes(DATA[:offset])
        w.write(DATA[offset:])
        info = w.commit(len(DATA), Digest.from_bytes(DATA))
    with store.reader_at(info.digest) as ra:
        assert Digest.from_bytes(ra.read_at(0, ra.size)) == Digest.from_bytes(DATA)
    assert uploads(client, location) == []


def test_a_part_the_record_does_not_vouch_for_is_replaced(
    store: S3Store, s3_endpoint: S3Endpoint, location: S3Location
) -> None:
    """A writer killed between uploading a part and recording it leaves a part nobody
    vouches for: the next writer uploads over it."""
    client = s3_endpoint.client()
    w = store.writer("unvouched", desc(DATA))
    w.write(DATA[:PART])
    w.close()
    (up,) = uploads(client, location)
    client.upload_part(
        Bucket=location.bucket,
        Key=up["Key"],
        UploadId=up["UploadId"],
        PartNumber=2,
        Body=b"y" * PART,
    )
    with store.writer("unvouched", desc(DATA)) as w:
        assert w.status().offset == PART
        w.write(DATA[PART:])
        info = w.commit(len(DATA), Digest.from_bytes(DATA))
    with store.reader_at(info.digest) as ra:
        assert ra.read_at(PART, PART) == DATA[PART : 2 * PART]


def test_a_tail_longer_than_the_part_size_is_split_into_parts_on_resume(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    """A writer of a store with larger parts leaves a tail of more than two of this
    store's parts: the resumed writer uploads them as parts 1 and 2 and keeps the rest
    buffered, and the blob is exactly the content."""
    client = s3_endpoint.client()
    big = S3Store(location, client, tmp_path, part_size=3 * PART)
    upto = 2 * PART + 1024 * 1024
    with big.writer("split", desc(DATA)) as w:
        w.write(DATA[:upto])
    assert uploads(client, location) == []  # all of it is the stored tail
    store = S3Store(location, client, tmp_path, part_size=PART)
    with store.writer("split", desc(DATA)) as w:
        assert w.status().offset == upto
        w.write(DATA[upto : upto + 1])
        wait_until(lambda: parts_of(client, location) == [1, 2], 30, "parts 1 and 2 uploaded")
        w.write(DATA[upto + 1 :])
        info = w.commit(len(DATA), Digest.from_bytes(DATA))
    with store.reader_at(info.digest) as ra:
        assert ra.read_at(0, ra.size) == DATA
    assert uploads(client, location) == []


def test_small_blobs_are_buffered_and_take_no_multipart_upload(
    store: S3Store, s3_endpoint: S3Endpoint, location: S3Location
) -> None:
    client = s3_endpoint.client()
    data = DATA[: PART - 1]
    with store.writer("small", desc(data)) as w:
        w.write(data)
        assert uploads(client, location) == []
        info = w.commit(len(data), Digest.from_bytes(data))
    assert keys(client, location) == [f"blobs/sha256/{info.digest.encoded}"]
    assert store.info(info.digest) == info  # its times ride on the blob object


def test_a_small_blob_written_whole_takes_four_requests_and_labels_add_one(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    client = s3_endpoint.client()
    calls: list[str] = []
    client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    store = S3Store(location, client, tmp_path, locker=FakeRefLocker(), part_size=PART)
    with store.writer("first") as w:  # the first writer reads: the bucket exists
        w.write(b"first")
        w.commit()
    calls.clear()
    data = DATA[:4096]
    with store.writer("small", desc(data)) as w:
        w.write(data)
        info = w.commit(len(data), Digest.from_bytes(data))
    assert calls == ["HeadObject", "PutObject", "PutObject", "DeleteObject"]
    calls.clear()
    other = DATA[4096:8192]
    with store.writer("labelled", desc(other)) as w:
        w.write(other)
        labelled = w.commit(len(other), Digest.from_bytes(other), {"a": "1"})
    assert calls == [
        "HeadObject", "PutObject", "PutObject", "PutObject", "DeleteObject"
    ]  # fmt: skip
    assert store.info(labelled.digest) == labelled
    assert store.info(info.digest) == info
    updated = store.update(Info(info.digest, 0, info.created_at, info.updated_at, {"b": "2"}))
    assert updated.created_at == info.created_at
    assert dict(store.info(info.digest).labels) == {"b": "2"}


@pytest.mark.parametrize("with_digest", [True, False], ids=["direct", "staged"])
def test_commit_leaves_only_the_blob_and_its_metadata(
    store: S3Store, s3_endpoint: S3Endpoint, location: S3Location, with_digest: bool
) -> None:
    client = s3_endpoint.client()
    with store.writer("big", desc(DATA) if with_digest else None) as w:
        w.write(DATA)
        assert len(uploads(client, location)) == 1
        info = w.commit(len(DATA), Digest.from_bytes(DATA))
    assert uploads(client, location) == []
    assert keys(client, location) == [
        f"blobs/sha256/{info.digest.encoded}",
        f"meta/sha256/{info.digest.encoded}.json",
    ]
    assert store.info(info.digest) == info


def test_abort_leaves_no_multipart_upload(
    store: S3Store, s3_endpoint: S3Endpoint, location: S3Location
) -> None:
    client = s3_endpoint.client()
    w = store.writer("abort-me", desc(DATA))
    w.write(DATA[: PART + 100])
    w.close()
    assert len(uploads(client, location)) == 1
    assert store.status("abort-me").offset == PART + 100
    store.abort("abort-me")
    assert uploads(client, location) == []
    assert keys(client, location) == []
    with pytest.raises(errdefs.NotFound):
        store.status("abort-me")


def test_truncate_starts_a_new_upload(
    store: S3Store, s3_endpoint: S3Endpoint, location: S3Location
) -> None:
    client = s3_endpoint.client()
    with store.writer("trunc") as w:
        w.write(b"z" * (PART + 1))
        (first,) = uploads(client, location)
        w.truncate(0)
        assert uploads(client, location) == []
        w.write(DATA)
        (second,) = uploads(client, location)
        assert second["UploadId"] != first["UploadId"]
        w.commit(len(DATA), Digest.from_bytes(DATA))


@pytest.mark.parametrize("with_digest", [True, False], ids=["direct", "staged"])
def test_a_second_writer_of_a_digest_gets_already_exists_from_the_conditional_publish(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path, with_digest: bool
) -> None:
    """Two writers on two refs (two hosts: own clients and lockers) upload the same
    content at the same time; the first commit publishes it, the second's conditional
    CompleteMultipartUpload (direct) or CopyObject (staged) answers 412: AlreadyExists,
    and its upload is aborted. (The store sends no HEAD first: the condition decides.)"""
    one, two = (
        S3Store(location, s3_endpoint.client(), tmp_path, locker=FakeRefLocker(), part_size=PART)
        for _ in range(2)
    )
    expected = desc(DATA) if with_digest else None
    w1, w2 = one.writer("first", expected), two.writer("second", expected)
    w1.write(DATA)
    w2.write(DATA)
    client = s3_endpoint.client()
    assert len(uploads(client, location)) == 2
    info = w1.commit(len(DATA), Digest.from_bytes(DATA), {"by": "first"})
    with pytest.raises(errdefs.AlreadyExists):
        w2.commit(len(DATA), Digest.from_bytes(DATA), {"by": "second"})
    assert uploads(client, location) == []
    assert two.list_statuses() == []
    assert two.info(info.digest) == info  # the first writer's labels stand
    assert keys(client, location) == [
        f"blobs/sha256/{info.digest.encoded}",
        f"meta/sha256/{info.digest.encoded}.json",
    ]


def test_writers_racing_to_publish_a_digest_leave_one_intact_blob(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    """Commits released at once by a barrier. SeaweedFS 4.48 checks If-None-Match
    before it writes, not atomically with it, so several racers may all succeed there;
    what the store guarantees on any server: each gets Info or AlreadyExists, at least
    one Info, one intact blob, and nothing left behind."""
    n = 3
    stores = [
        S3Store(location, s3_endpoint.client(), tmp_path, locker=FakeRefLocker(), part_size=PART)
        for _ in range(n)
    ]
    writers = [s.writer(f"racer-{i}", desc(DATA)) for i, s in enumerate(stores)]
    for w in writers:
        w.write(DATA)
    start = threading.Barrier(n)
    outcomes: list[object] = []

    def commit(i: int) -> None:
        start.wait(30)
        try:
            outcomes.append(writers[i].commit(len(DATA), Digest.from_bytes(DATA)))
        except errdefs.AlreadyExists as e:
            outcomes.append(e)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == n
    assert any(not isinstance(o, errdefs.AlreadyExists) for o in outcomes)
    client = s3_endpoint.client()
    assert uploads(client, location) == []
    assert stores[0].list_statuses() == []
    digest = Digest.from_bytes(DATA)
    with stores[0].reader_at(digest) as ra:
        assert Digest.from_bytes(ra.read_at(0, ra.size)) == digest


def test_concurrent_label_updates_are_never_lost(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    stores = [S3Store(location, s3_endpoint.client(), tmp_path) for _ in range(4)]
    with stores[0].writer("labelled") as w:
        w.write(b"labelled")
        info = w.commit()

    errors: list[BaseException] = []

    def label(i: int) -> None:
        try:
            for j in range(5):
                key = f"k{i}-{j}"
                stores[i].update(
                    type(info)(info.digest, 0, info.created_at, info.updated_at, {key: "v"}),
                    f"labels.{key}",
                )
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=label, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert set(stores[0].info(info.digest).labels) == {
        f"k{i}-{j}" for i in range(4) for j in range(5)
    }


# errors ----------------------------------------------------------------------------------
def test_bad_credentials_are_unauthenticated(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    for client in (
        s3_endpoint.client(aws_secret_access_key="wrong" * 8),
        s3_endpoint.client(aws_access_key_id="AKNOBODY0000000000"),
    ):
        store = S3Store(location, client, tmp_path)
        with pytest.raises(errdefs.Unauthenticated):
            store.info(Digest.from_bytes(b"anything"))
        with pytest.raises(errdefs.Unauthenticated):
            store.writer("denied")
        with pytest.raises(errdefs.Unauthenticated):
            store.list_statuses()


def test_a_read_only_identity_is_permission_denied(
    seaweed: SeaweedServer, store: S3Store, location: S3Location, tmp_path: Path
) -> None:
    with store.writer("readable") as w:
        w.write(b"readable")
        info = w.commit()
    reader = S3Store(location, seaweed.reader.client(), tmp_path)
    assert reader.info(info.digest) == info
    with pytest.raises(errdefs.PermissionDenied):
        reader.writer("not-yours")
    with pytest.raises(errdefs.PermissionDenied):
        reader.delete(info.digest)


def test_a_missing_bucket_is_not_found(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    store = S3Store(S3Location("no-such-bucket-here"), s3_endpoint.client(), tmp_path)
    with pytest.raises(errdefs.NotFound) as exc:
        store.writer("nowhere")
    assert exc.value.details["s3_code"] == "NoSuchBucket"
    with pytest.raises(errdefs.NotFound):
        store.list_statuses()
    with pytest.raises(errdefs.NotFound):
        list(store.walk())


def test_an_unreachable_server_is_unavailable(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    store = S3Store(S3Location("b"), s3_endpoint.client(endpoint_url=dead), tmp_path)
    with pytest.raises(errdefs.Unavailable):
        store.info(Digest.from_bytes(b"x"))
    with pytest.raises(errdefs.Unavailable):
        store.writer("offline")


def test_a_server_that_never_answers_is_unavailable_within_the_timeouts(
    s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    # Connections are accepted (by the listen backlog) and requests are never answered.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        env = {
            **s3_endpoint.env(),
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{silent.getsockname()[1]}",
        }
        client = make_client(
            env,
            connect_timeout=0.5,
            read_timeout=0.5,
            aws_access_key_id=s3_endpoint.access_key,
            aws_secret_access_key=s3_endpoint.secret_key,
            region_name=s3_endpoint.region,
        )
        store = S3Store(S3Location("b"), client, tmp_path)
        outcomes: list[BaseException | bool] = []

        def ask() -> None:
            try:
                outcomes.append(store.exists(Digest.from_bytes(b"x")))
            except BaseException as e:
                outcomes.append(e)

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        asker.join(60)  # the bound: 4 attempts of 0.5 s each, far below it
        assert not asker.is_alive(), "the request to a silent server never ended"
    assert len(outcomes) == 1 and isinstance(outcomes[0], errdefs.Unavailable), outcomes


def test_a_failed_part_upload_closes_the_writer_and_keeps_what_is_vouched_for(
    store: S3Store, s3_endpoint: S3Endpoint, location: S3Location
) -> None:
    """The upload is aborted behind the writer's back: its next part fails (NotFound
    NoSuchUpload), the writer closes itself, and the next writer starts over."""
    client = s3_endpoint.client()
    w = store.writer("pulled-away", desc(DATA))
    w.write(DATA[:PART])
    wait_until(lambda: vouched_parts(client, location, "pulled-away") == (1, 0), 30, "part 1")
    (up,) = uploads(client, location)
    client.abort_multipart_upload(Bucket=location.bucket, Key=up["Key"], UploadId=up["UploadId"])
    w.write(DATA[PART : 2 * PART])
    with pytest.raises(errdefs.NotFound) as exc:
        w.commit(len(DATA), Digest.from_bytes(DATA))
    assert exc.value.details["s3_code"] == "NoSuchUpload"
    with pytest.raises(errdefs.FailedPrecondition):
        w.write(b"more")  # closed
    assert store.status("pulled-away").holder is None  # the lock was released
    with store.writer("pulled-away", desc(DATA)) as w2:
        assert w2.status().offset == 0
        w2.write(DATA)
        info = w2.commit(len(DATA), Digest.from_bytes(DATA))
    assert info.size == len(DATA)
    assert uploads(client, location) == []


class Requests:
    """The S3 requests a client sends (observed with a botocore event hook): operation
    name and the If-None-Match header of each."""

    def __init__(self, client: Any) -> None:
        self.sent: list[tuple[str, str | None]] = []
        client.meta.events.register("before-send.s3.*", self._sent)

    def _sent(self, request: Any, event_name: str, **_: Any) -> None:
        name = event_name.rsplit(".", 1)[-1]  # before-send.s3.<operation>
        match = request.headers.get("If-None-Match")
        self.sent.append((name, match.decode() if isinstance(match, bytes) else match))

    def names(self) -> list[str]:
        names = [n for n, _ in self.sent]
        self.sent.clear()
        return names


def counted_store(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path, **kw: Any
) -> tuple[S3Store, Requests, Any]:
    """A store on a client of its own, its requests observed; the listing of ingest
    records put() consults does not age during the test."""
    client = s3_endpoint.client()
    seen = Requests(client)
    store = S3Store(
        location, client, tmp_path, locker=FakeRefLocker(), part_size=PART,
        ingest_list_ttl=3600.0, **kw,
    )  # fmt: skip
    return store, seen, client


def test_put_of_a_small_blob_is_one_conditional_put(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    store, seen, client = counted_store(s3_endpoint, location, tmp_path)
    first, second = DATA[:4096], DATA[4096:8192]
    info = store.put("small", desc(first), first)
    # The first put lists the ingest records once; every later one is one PUT.
    assert seen.names() == ["ListObjectsV2", "PutObject"]
    info2 = store.put("small-2", desc(second), second)
    assert seen.sent == [("PutObject", "*")]
    seen.names()
    assert keys(client, location) == [
        f"blobs/sha256/{d.encoded}" for d in sorted((info.digest, info2.digest), key=str)
    ]  # no metadata object, no ingest record
    assert store.info(info.digest) == info
    seen.names()
    with pytest.raises(errdefs.AlreadyExists):
        store.put("again", desc(first), first)
    assert seen.sent == [("PutObject", "*")]  # the 412 answers it


def test_put_with_labels_adds_only_the_metadata_object(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    store, seen, _ = counted_store(s3_endpoint, location, tmp_path)
    data = DATA[:4096]
    store.put("warm", desc(DATA[1:100]), DATA[1:100])
    seen.names()
    info = store.put("labelled", desc(data), data, {"a": "1"})
    assert seen.names() == ["PutObject", "PutObject"]
    assert dict(store.info(info.digest).labels) == {"a": "1"}


def test_write_blob_of_memory_is_one_put_and_other_sources_are_asked_about_first(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    store, seen, _ = counted_store(s3_endpoint, location, tmp_path)
    store.put("warm", desc(DATA[1:100]), DATA[1:100])
    data, other = DATA[:4096], DATA[4096:8192]
    seen.names()
    info = write_blob(store, "mem", io.BytesIO(data), desc(data))
    assert seen.names() == ["PutObject"]
    # Content already there: the put's 412 says so, then its Info is read.
    assert write_blob(store, "mem-again", io.BytesIO(data), desc(data)) == info
    assert seen.names()[0] == "PutObject"

    class Stream(io.RawIOBase):  # not in memory: may be costly to read
        def __init__(self, body: bytes) -> None:
            self.body = io.BytesIO(body)

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            return self.body.readinto(b)

    assert write_blob(store, "stream-again", Stream(data), desc(data)) == info
    assert "PutObject" not in seen.names()
    write_blob(store, "stream", Stream(other), desc(other))
    assert seen.names() == ["HeadObject", "PutObject"]  # one question, then the put


def test_the_ingest_cores_small_path_asks_once_whether_the_blob_exists(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    """A small job: the HEAD before the fetch, the GET of an ingest record to resume,
    the conditional PUT; no second HEAD under the lock (the PUT's 412 tells)."""
    store, seen, _ = counted_store(s3_endpoint, location, tmp_path)
    store.put("warm", desc(DATA[1:100]), DATA[1:100])
    data = DATA[:4096]
    request = make_request(
        {"type": "memory"}, "memory:test", digest=Digest.from_bytes(data), size=len(data)
    )
    seen.names()
    result = ingest_once(store, BytesSource(data), request)
    assert result.fetched and result.info.digest == Digest.from_bytes(data)
    assert seen.names() == ["HeadObject", "GetObject", "PutObject"]


def test_put_sends_a_ref_with_an_ingest_record_through_the_writer(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    """Another store (host) left an unfinished ingest of the ref: a store listing the
    records afterwards resumes and drops it, as the contract asks."""
    data = DATA[:4096]
    with S3Store(location, s3_endpoint.client(), tmp_path / "a", part_size=PART).writer(
        "left", desc(data)
    ) as w:
        w.write(data[:1000])
    store, seen, client = counted_store(s3_endpoint, location, tmp_path / "b")
    info = store.put("left", desc(data), data)
    assert "GetObject" in seen.names()  # its record was read
    assert info.digest == Digest.from_bytes(data)
    with pytest.raises(errdefs.NotFound):
        store.status("left")
    assert [k for k in keys(client, location) if k.startswith("ingests/")] == []
    assert uploads(client, location) == []
    # Dropped: the next put of the ref is one PUT again.
    other = DATA[4096:8192]
    seen.names()
    store.put("left", desc(other), other)
    assert seen.names() == ["PutObject"]


def test_put_without_conditional_writes_asks_first(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    """A server that ignores If-None-Match: a HEAD comes first (two racing writers may
    both write the same content-addressed key, which is harmless)."""
    store, seen, _ = counted_store(s3_endpoint, location, tmp_path, conditional_writes=False)
    data = DATA[:4096]
    store.put("small", desc(data), data)
    assert seen.names() == ["ListObjectsV2", "HeadObject", "PutObject"]
    with pytest.raises(errdefs.AlreadyExists):
        store.put("again", desc(data), data)
    assert seen.names() == ["HeadObject"]


def test_the_client_computes_no_checksums_and_signs_bodies_only_over_plain_http(
    s3_endpoint: S3Endpoint, location: S3Location, tmp_path: Path
) -> None:
    secure = make_client({"AWS_ENDPOINT_URL": "https://s3.example.test"})
    assert secure.meta.config.s3["payload_signing_enabled"] is False
    assert make_client({}).meta.config.s3["payload_signing_enabled"] is False
    env = {**s3_endpoint.env()}
    client = make_client(env, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                         aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
    assert "payload_signing_enabled" not in client.meta.config.s3  # plain HTTP: signed
    assert client.meta.config.max_pool_connections == MAX_POOL_CONNECTIONS
    sent: list[dict[str, str]] = []
    client.meta.events.register(
        "before-send.s3.*", lambda request, **_: sent.append(dict(request.headers))
    )
    store = S3Store(location, client, tmp_path, locker=FakeRefLocker(), part_size=PART)
    store.put("small", desc(DATA[:4096]), DATA[:4096])
    with store.writer("big", desc(DATA)) as w:
        w.write(DATA)
        w.commit(len(DATA), Digest.from_bytes(DATA))
    bodies = [h for h in sent if int(h.get("Content-Length", 0) or 0) >= 4096]
    assert len(bodies) >= 5  # the small PUT and the parts
    for headers in bodies:
        names = {k.lower() for k in headers}
        assert "content-md5" not in names
        assert not any(n.startswith("x-amz-checksum") for n in names)
        assert "x-amz-sdk-checksum-algorithm" not in names
