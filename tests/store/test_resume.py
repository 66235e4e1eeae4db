"""Resume hints (store.resume): one file per ref under the root's resume/, advisory and
best effort."""

from __future__ import annotations

from pathlib import Path

from ingestq.store.layout import RootLayout
from ingestq.store.resume import ResumeHints


def test_put_get_drop(tmp_path: Path) -> None:
    hints = ResumeHints(tmp_path)
    assert hints.get("ref", "https://a/x") is None
    hints.put("ref", "https://a/x", '"etag-1"')
    assert hints.get("ref", "https://a/x") == '"etag-1"'
    assert hints.get("ref", "https://b/x") is None  # another source: no hint
    assert ResumeHints(tmp_path).get("ref", "https://a/x") == '"etag-1"'  # another process
    assert RootLayout(tmp_path).resume_hint("ref").is_file()
    hints.put("ref", "https://a/x", None)
    assert hints.get("ref", "https://a/x") is None
    hints.drop("ref")  # dropping twice is fine
    assert [p.name for p in (tmp_path / "resume").iterdir()] == []


def test_damaged_hints_read_as_none_and_failures_are_silent(tmp_path: Path) -> None:
    hints = ResumeHints(tmp_path)
    hints.put("ref", "s", "v")
    path = RootLayout(tmp_path).resume_hint("ref")
    for garbage in ("{", "[]", '{"source": "s", "validator": 5}', '{"source": "s"}'):
        path.write_text(garbage)
        assert hints.get("ref", "s") is None
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the root should be")
    ResumeHints(blocked).put("ref", "s", "v")  # best effort: no error
    assert ResumeHints(blocked).get("ref", "s") is None
