"""Atomic file replacement (store.atomic): readers see the old content or the new, and
nothing is left behind, whether or not the write is synced or fails."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ingestq.store.atomic import fsync_dir, write_bytes, write_json, write_text


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize(("sync", "sync_dir"), [(True, None), (True, False), (False, None)])
def test_write_replaces_the_file_whole(tmp_path: Path, sync: bool, sync_dir: bool | None) -> None:
    target = tmp_path / "f"
    write_bytes(target, b"one", sync=sync, sync_dir=sync_dir)
    inode = target.stat().st_ino
    write_bytes(target, b"two", sync=sync, sync_dir=sync_dir)
    assert target.read_bytes() == b"two"
    assert target.stat().st_ino != inode  # a new file renamed over, never rewritten
    assert leftovers(tmp_path) == []


def test_text_keeps_lone_surrogates_and_json_is_sorted_and_indented(tmp_path: Path) -> None:
    write_text(tmp_path / "t", "ref-\udcff", sync=False)
    assert (tmp_path / "t").read_bytes().decode("utf-8", "surrogatepass") == "ref-\udcff"
    write_json(tmp_path / "j", {"b": 1, "a": [1, 2]})
    text = (tmp_path / "j").read_text()
    assert text == json.dumps({"a": [1, 2], "b": 1}, indent=2, sort_keys=True) + "\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_bytes(target, b"old")
    with pytest.raises(TypeError):
        write_json(target, {"x": object()})
    assert target.read_bytes() == b"old"
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        write_bytes(tmp_path / "dir", b"x")  # the rename fails after the temp is written
    with pytest.raises(FileNotFoundError):
        write_bytes(tmp_path / "missing" / "f", b"x")
    assert leftovers(tmp_path) == []
    assert target.read_bytes() == b"old"


def test_fsync_dir_needs_a_directory(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "file")
    assert os.listdir(tmp_path) == ["file"]
