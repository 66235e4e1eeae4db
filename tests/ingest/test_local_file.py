"""Ingesting a local file: the kernel copies it into the store (FileSource's stream is a
LocalFileStream, the local writer an FdCopier) with the same checks, resume and events
as the read/write path, which ``zero_copy=False`` forces."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.fetch.files import FileSource, LocalFileStream
from ingestq.ingest.attempt import CHUNK, FILE_PIECE, ingest_once
from ingestq.ingest.request import IngestRequest, make_request
from ingestq.store.digest import Digest
from ingestq.store.local import LocalStore
from tests.ingest.helpers import MiB, Recorder

SIZE = FILE_PIECE + 3 * MiB + 17


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store", fsync=True)


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A directory on a tmpfs (/dev/shm): another filesystem than the store's."""
    path = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="ingestq-localfile-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _file(path: Path, size: int = SIZE) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def _request(path: Path, data: bytes, *, digest: bool = True, size: bool = True) -> IngestRequest:
    return make_request(
        {"type": "file", "path": str(path)},
        str(path),
        digest=Digest.from_bytes(data) if digest else None,
        size=len(data) if size else 0,
    )


def _progress(hooks: Recorder) -> list[int]:
    return [e[1] for e in hooks.events if e[0] == "progress"]


def test_a_file_source_opens_a_local_file_stream_unless_zero_copy_is_off(tmp_path: Path) -> None:
    _file(tmp_path / "f", 10)
    fast = FileSource(tmp_path / "f", None).open()
    plain = FileSource(tmp_path / "f", None, zero_copy=False).open()
    try:
        assert isinstance(fast.stream, LocalFileStream)
        assert not isinstance(plain.stream, LocalFileStream)
    finally:
        fast.stream.close()
        plain.stream.close()


@pytest.mark.parametrize("digest", [True, False])
def test_a_local_file_is_copied_in_kernel_pieces_with_its_digest_and_size(
    store: LocalStore, tmp_path: Path, digest: bool
) -> None:
    data = _file(tmp_path / "f")
    req = _request(tmp_path / "f", data, digest=digest)
    hooks = Recorder()
    result = ingest_once(store, FileSource(tmp_path / "f", None), req, hooks=hooks)
    assert result.info.digest == Digest.from_bytes(data) and result.info.size == SIZE
    assert result.bytes_fetched == SIZE
    assert _progress(hooks) == [0, FILE_PIECE, SIZE]  # kernel pieces, not 1 MiB reads
    assert store.reader_at(result.info.digest).read_at(0, SIZE) == data


def test_zero_copy_off_takes_the_read_write_path_with_the_same_result(
    store: LocalStore, tmp_path: Path
) -> None:
    data = _file(tmp_path / "f", 3 * CHUNK + 5)
    req = _request(tmp_path / "f", data)
    hooks = Recorder()
    source = FileSource(tmp_path / "f", None, zero_copy=False)
    result = ingest_once(store, source, req, hooks=hooks)
    assert result.info.digest == req.digest and result.info.size == len(data)
    assert _progress(hooks) == [0, CHUNK, 2 * CHUNK, 3 * CHUNK, len(data)]


def test_a_file_on_a_tmpfs_is_ingested_into_a_store_on_disk(store: LocalStore, tmpfs: Path) -> None:
    data = _file(tmpfs / "f")
    req = _request(tmpfs / "f", data)
    result = ingest_once(store, FileSource(tmpfs / "f", None), req)
    assert result.info.digest == req.digest
    assert store.reader_at(req.digest).read_at(0, SIZE) == data  # type: ignore[arg-type]


def test_a_resume_copies_from_the_stored_offset(store: LocalStore, tmp_path: Path) -> None:
    data = _file(tmp_path / "f")
    req = _request(tmp_path / "f", data)
    with store.writer(req.ref, req.expected) as w:
        w.write(data[: 5 * MiB])
    hooks = Recorder()
    result = ingest_once(store, FileSource(tmp_path / "f", None), req, hooks=hooks)
    assert result.resumed_from == 5 * MiB and result.bytes_fetched == SIZE - 5 * MiB
    assert ("resumed", 5 * MiB) in hooks.events
    assert _progress(hooks) == [5 * MiB, SIZE]  # the rest is less than one piece
    assert result.info.digest == req.digest


def test_a_file_that_shrinks_during_the_copy_is_data_loss_and_keeps_the_prefix(
    store: LocalStore, tmp_path: Path
) -> None:
    path = tmp_path / "f"
    data = _file(path)
    req = _request(path, data)

    def shrink(offset: int, total: int) -> None:
        if offset == FILE_PIECE:
            os.truncate(path, FILE_PIECE + MiB)

    with pytest.raises(errdefs.DataLoss):
        ingest_once(store, FileSource(path, None), req, hooks=Recorder(on_progress=shrink))
    assert store.status(req.ref).offset == FILE_PIECE + MiB


def test_a_file_that_grows_past_the_size_during_the_copy_is_failed_precondition(
    store: LocalStore, tmp_path: Path
) -> None:
    path = tmp_path / "f"
    data = _file(path)
    req = _request(path, data)

    def grow(offset: int, total: int) -> None:
        if offset == FILE_PIECE:
            with path.open("ab") as f:
                f.write(b"x" * MiB)

    with pytest.raises(errdefs.FailedPrecondition, match="longer"):
        ingest_once(store, FileSource(path, None), req, hooks=Recorder(on_progress=grow))
    with pytest.raises(errdefs.NotFound):  # wrong content is dropped, with its ingest
        store.status(req.ref)


def test_a_file_cancelled_between_pieces_keeps_the_copied_prefix(
    store: LocalStore, tmp_path: Path
) -> None:
    data = _file(tmp_path / "f")
    req = _request(tmp_path / "f", data)
    with pytest.raises(errdefs.Canceled):
        ingest_once(store, FileSource(tmp_path / "f", None), req, hooks=Recorder(cancel_at=1))
    assert store.status(req.ref).offset == FILE_PIECE
