"""Local file sources stay under their roots; configuration is read on purpose."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.fetch.files import FileSource
from ingestq.fetch.refkey import make_ref_key, source_ref
from ingestq.fetch.specs import source_from_spec, spec_from_text
from ingestq.jobs.config import Settings
from ingestq.store.digest import Digest
from ingestq.tasks.app import celery_config


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "ok.bin").write_bytes(b"0123456789")
    (outside / "secret").write_bytes(b"secret")
    return allowed, outside


def test_a_file_under_a_root_opens_and_resumes(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    src = FileSource(allowed / "ok.bin", [allowed])
    opened = src.open(4)
    assert (opened.start, opened.size, opened.stream.read(100)) == (4, 10, b"456789")
    opened.stream.close()
    assert src.validator is not None


def test_a_changed_file_restarts_from_zero(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    src = FileSource(allowed / "ok.bin", [allowed])
    src.if_range = "file:stale"
    opened = src.open(4)
    assert opened.start == 0
    opened.stream.close()


def test_a_symlink_escaping_the_root_is_permission_denied(roots: tuple[Path, Path]) -> None:
    allowed, outside = roots
    (allowed / "link").symlink_to(outside / "secret")
    with pytest.raises(errdefs.PermissionDenied, match="outside the allowed file roots"):
        FileSource(allowed / "link", [allowed]).open()


def test_dotdot_and_relative_paths_are_invalid(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    with pytest.raises(errdefs.InvalidArgument, match=r"\.\."):
        FileSource(f"{allowed}/../outside/secret", [allowed]).open()
    with pytest.raises(errdefs.InvalidArgument, match="absolute"):
        FileSource("ok.bin", [allowed]).open()


def test_missing_files_directories_and_no_roots(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    with pytest.raises(errdefs.NotFound):
        FileSource(allowed / "missing", [allowed]).open()
    with pytest.raises(errdefs.InvalidArgument, match="regular file"):
        FileSource(allowed, [allowed]).open()
    with pytest.raises(errdefs.PermissionDenied):
        FileSource(allowed / "ok.bin", []).open()


def test_workers_refuse_files_without_roots_but_the_embedded_default_reads_them(
    roots: tuple[Path, Path],
) -> None:
    allowed, _ = roots
    spec = spec_from_text(str(allowed / "ok.bin"))
    worker = Settings.from_env({"INGESTQ_REDIS_URL": "redis://127.0.0.1:1/0"})
    with pytest.raises(errdefs.PermissionDenied):
        source_from_spec(spec, worker).open()
    embedded = Settings.from_env({})
    opened = source_from_spec(spec, embedded).open()
    assert opened.stream.read(3) == b"012"
    opened.stream.close()


def test_spec_from_text_and_unknown_types() -> None:
    assert spec_from_text("https://h/x") == {"type": "http", "url": "https://h/x"}
    assert spec_from_text("rel/f", cwd="/base") == {"type": "file", "path": "/base/rel/f"}
    with pytest.raises(errdefs.InvalidArgument):
        spec_from_text("ftp://h/x")
    with pytest.raises(errdefs.InvalidArgument, match="unknown source type"):
        source_from_spec({"type": "gopher"}, Settings())


def test_default_refs_follow_make_ref_key() -> None:
    d = Digest.parse("sha256:" + "a" * 64)
    assert make_ref_key(d, "application/vnd.oci.image.layer.v1.tar+gzip") == f"layer-{d}"
    assert make_ref_key(d, "application/vnd.oci.image.manifest.v1+json") == f"manifest-{d}"
    assert make_ref_key(d, "application/vnd.oci.image.index.v1+json") == f"index-{d}"
    assert make_ref_key(d, "application/vnd.oci.image.config.v1+json") == f"config-{d}"
    assert make_ref_key(d) == f"blob-{d}"
    named = {"org.opencontainers.image.ref.name": "v1"}
    assert make_ref_key(d, "application/octet-stream", named) == f"blob-v1@{d}"
    assert source_ref("https://h/x").startswith("source-") and len(source_ref("x")) == 71


def test_settings_from_the_environment() -> None:
    s = Settings.from_env(
        {
            "INGESTQ_REDIS_URL": "rediss://:s3cret@redis.example:6380/2",
            "INGESTQ_LOCK_URL": "redis://locks:6379/0",
            "INGESTQ_VISIBILITY_TIMEOUT": "7200",
            "INGESTQ_FILE_ROOTS": os.pathsep.join(["/a", "/b"]),
        }
    )
    assert s.broker_url == s.result_url == "rediss://:s3cret@redis.example:6380/2"
    assert s.lock_url == "redis://locks:6379/0"
    assert s.file_roots == (Path("/a"), Path("/b"))
    assert s.queued and not Settings.from_env({}).queued
    with pytest.raises(errdefs.InvalidArgument):
        Settings.from_env({"INGESTQ_REDIS_URL": "amqp://x"})
    with pytest.raises(errdefs.InvalidArgument):
        Settings.from_env({"INGESTQ_LEASE_TTL": "soon"})


def test_the_celery_configuration_is_chosen_on_purpose() -> None:
    conf = celery_config(Settings.from_env({"INGESTQ_REDIS_URL": "redis://h:1/0"}))
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["accept_content"] == conf["result_accept_content"] == ["json"]
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] == 43200
    assert conf["result_backend_transport_options"]["visibility_timeout"] == 43200
    assert conf["broker_transport_options"]["socket_timeout"] == 30
    assert conf["result_extended"] and conf["result_expires"] == 7 * 24 * 3600
    assert "pickle" not in repr(conf)
