"""Resume hints: the validator (ETag, Last-Modified, file identity) a source had when an
ingest started, kept beside the store so a later attempt in any process can send
If-Range and never splice two versions of a resource.

Files: ``resume/<sha256(ref)>.json`` under the store root (see :mod:`store.layout`),
holding ``{"source": name, "validator": v}``. They are advisory: a missing or unreadable
hint only means the ingest restarts from 0 (or, with an expected digest, resumes
unguarded and is checked at commit).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ingestq.store.atomic import write_json
from ingestq.store.layout import RootLayout


class ResumeHints:
    """Validators per ref under the root's ``resume/``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._layout = RootLayout(Path(root))

    def get(self, ref: str, source: str) -> str | None:
        """The validator recorded for ``ref`` when fetched from ``source``, or None."""
        try:
            d = json.loads(self._layout.resume_hint(ref).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(d, dict) or d.get("source") != source:
            return None
        v = d.get("validator")
        return v if isinstance(v, str) and v else None

    def put(self, ref: str, source: str, validator: str | None) -> None:
        """Record (or, with None, forget) the validator for ``ref``. Best effort."""
        if validator is None:
            self.drop(ref)
            return
        with contextlib.suppress(OSError):
            self._layout.resume.mkdir(parents=True, exist_ok=True)
            # Not fsynced: a hint lost in a crash only costs a restart from offset 0.
            hint = {"source": source, "validator": validator}
            write_json(self._layout.resume_hint(ref), hint, sync=False)

    def drop(self, ref: str) -> None:
        """Forget ``ref``'s validator."""
        with contextlib.suppress(OSError):
            self._layout.resume_hint(ref).unlink()
