"""Local file sources stay under their roots; source specs and default ingest refs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestq import errdefs
from ingestq.fetch.files import FileSource
from ingestq.fetch.options import FetchOptions
from ingestq.fetch.refkey import make_ref_key, source_ref
from ingestq.fetch.specs import source_from_spec, spec_from_text
from ingestq.store.digest import Digest


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


def test_file_specs_obey_the_file_roots_of_the_options(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    spec = spec_from_text(str(allowed / "ok.bin"))
    with pytest.raises(errdefs.PermissionDenied):
        source_from_spec(spec, FetchOptions(file_roots=())).open()
    with pytest.raises(errdefs.PermissionDenied):
        source_from_spec(spec, FetchOptions(file_roots=(allowed / "sub",))).open()
    for options in (FetchOptions(), FetchOptions(file_roots=(allowed,))):
        opened = source_from_spec(spec, options).open()
        assert opened.stream.read(3) == b"012"
        opened.stream.close()


def test_spec_from_text_and_unknown_types() -> None:
    assert spec_from_text("https://h/x") == {"type": "http", "url": "https://h/x"}
    assert spec_from_text("rel/f", cwd="/base") == {"type": "file", "path": "/base/rel/f"}
    with pytest.raises(errdefs.InvalidArgument):
        spec_from_text("ftp://h/x")
    with pytest.raises(errdefs.InvalidArgument, match="unknown source type"):
        source_from_spec({"type": "gopher"}, FetchOptions())


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
