"""The file source never blocks on a non-regular file and never reads outside its roots,
even while the tree under a root changes: both ways of opening beneath a root
(``openat2`` and the component walk) are exercised with real FIFOs, sockets, devices,
symlinks and a real racing swapper thread."""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.fetch.files import FileSource, open_beneath, openat2_available
from ingestq.jobs.api import JobState
from ingestq.jobs.config import Settings
from ingestq.tasks.client import connect, enqueue_ingest
from tests.fetch.racing import race
from tests.servers.util import bounded

OPENERS = [pytest.param(True, id="openat2"), pytest.param(False, id="walk")]


@pytest.fixture
def base() -> Iterator[Path]:
    """A short directory (a unix socket path must fit in 108 bytes): ``root`` holds
    ``ok.bin``, a FIFO, a listening unix socket and a directory; ``outside`` a secret."""
    with tempfile.TemporaryDirectory(prefix="iqf") as d:
        base = Path(d)
        root, outside = base / "root", base / "outside"
        root.mkdir()
        outside.mkdir()
        (root / "ok.bin").write_bytes(b"0123456789")
        (outside / "secret").write_bytes(b"SECRET")
        os.mkfifo(root / "fifo")
        (root / "dir").mkdir()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(str(root / "sock"))
            sock.listen()
            yield base


def test_openat2_is_what_this_host_uses() -> None:
    # The kernel path must really be exercised by the "openat2" cases below.
    assert openat2_available(), "openat2 unavailable: only the walk would be tested"


@pytest.mark.parametrize("use_openat2", OPENERS)
@pytest.mark.parametrize("restricted", [True, False], ids=["roots", "no-roots"])
@pytest.mark.parametrize("kind", ["fifo", "sock", "device", "dir"])
def test_a_non_regular_file_is_invalid_at_once(
    base: Path, kind: str, restricted: bool, use_openat2: bool
) -> None:
    path, root = (
        (Path("/dev/null"), Path("/dev"))
        if kind == "device"
        else (base / "root" / kind, base / "root")
    )
    src = FileSource(path, [root] if restricted else None, use_openat2=use_openat2)
    err = bounded(src.open)
    assert isinstance(err, errdefs.InvalidArgument), err
    assert "not a regular file" in str(err)


@pytest.mark.parametrize("kind", ["fifo", "sock", "dir"])
def test_an_embedded_job_on_a_non_regular_file_fails_invalid_at_once(
    base: Path, store_root: Path, kind: str
) -> None:
    # Default settings: the in-process runner, no file roots (the embedded default).
    client = connect(Settings(root=store_root, fsync=False))
    try:
        job = enqueue_ingest(str(base / "root" / kind), client=client)
        with pytest.raises(errdefs.InvalidArgument, match="not a regular file"):
            job.wait(timeout=30)
        assert job.state is JobState.FAILED
    finally:
        client.close()


def test_an_embedded_job_on_a_device_fails_invalid_at_once(store_root: Path) -> None:
    client = connect(Settings(root=store_root, fsync=False))
    try:
        job = enqueue_ingest("/dev/zero", client=client)
        with pytest.raises(errdefs.InvalidArgument, match="not a regular file"):
            job.wait(timeout=30)
    finally:
        client.close()


@pytest.mark.parametrize("use_openat2", OPENERS)
def test_symlinks_staying_in_the_root_are_followed_and_leaving_ones_refused(
    base: Path, use_openat2: bool
) -> None:
    root, outside = base / "root", base / "outside"
    (root / "sub").mkdir()
    (root / "sub" / "rel").symlink_to("../ok.bin")
    (root / "abs").symlink_to(root / "ok.bin")
    (root / "dirlink").symlink_to("sub")
    (root / "out").symlink_to(outside / "secret")
    (root / "outdir").symlink_to(outside)
    for name in ("sub/rel", "abs", "dirlink/rel"):
        opened = FileSource(root / name, [root], use_openat2=use_openat2).open()
        assert opened.stream.read(100) == b"0123456789", name
        opened.stream.close()
    for name in ("out", "outdir/secret"):
        with pytest.raises(errdefs.PermissionDenied, match="outside the allowed file roots"):
            FileSource(root / name, [root], use_openat2=use_openat2).open()


@pytest.mark.parametrize("use_openat2", OPENERS)
def test_missing_and_outside_keep_their_kinds(base: Path, use_openat2: bool) -> None:
    root = base / "root"
    with pytest.raises(errdefs.NotFound):
        FileSource(root / "missing", [root], use_openat2=use_openat2).open()
    with pytest.raises(errdefs.NotFound):
        FileSource(root / "ok.bin" / "x", [root], use_openat2=use_openat2).open()
    with pytest.raises(errdefs.PermissionDenied, match="outside the allowed file roots"):
        FileSource(base / "outside" / "secret", [root], use_openat2=use_openat2).open()


@pytest.mark.parametrize("use_openat2", OPENERS)
def test_opening_beneath_a_root_follows_no_symlink(base: Path, use_openat2: bool) -> None:
    # What the open meets when a directory became a symlink after the path was
    # resolved: refused whether the link leads out or stays inside.
    root, outside = base / "root", base / "outside"
    (root / "out").symlink_to(outside)
    (root / "in").symlink_to("dir")
    (root / "dir" / "secret").write_bytes(b"inside")
    (root / "last").symlink_to("ok.bin")
    for rest in ("out/secret", "in/secret", "last"):
        with pytest.raises(OSError) as caught:
            open_beneath(root, rest, use_openat2=use_openat2)
        assert caught.value.errno == errno.ELOOP, rest
    fd = open_beneath(root, "dir/secret", use_openat2=use_openat2)
    try:
        assert os.read(fd, 100) == b"inside"
    finally:
        os.close(fd)


@pytest.mark.parametrize("use_openat2", OPENERS)
def test_swapping_a_directory_for_a_symlink_never_reads_outside(
    base: Path, use_openat2: bool
) -> None:
    root, outside = base / "root", base / "outside"
    (outside / "f").write_bytes(b"SECRET")
    d = root / "d"
    d.mkdir()
    (d / "f").write_bytes(b"inside")

    def read_once() -> str:
        opened = FileSource(d / "f", [root], use_openat2=use_openat2).open()
        try:
            return opened.stream.read(100).decode()
        finally:
            opened.stream.close()

    seen, refused = race(d, outside, read_once)
    assert seen["SECRET"] == 0, (seen, refused)
    assert seen["inside"] > 0 and refused > 0, (seen, refused)
