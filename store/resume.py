"""Resume hints: the validator (ETag, Last-Modified, file identity) a source had when an
ingest started, kept beside the store so a later attempt in any process can send
If-Range and never splice two versions of a resource.

Files: ``<root>/resume/<sha256(ref)>.json`` holding ``{"source": name, "validator": v}``.
They are advisory: a missing or unreadable hint only means the ingest restarts from 0
(or, with an expected digest, resumes unguarded and is checked at commit).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path

from ingestq.store.locks import ref_key


class ResumeHints:
    """Validators per ref under ``<root>/resume``."""

    def __init__(self, root: Path) -> None:
        self._dir = Path(root) / "resume"

    def _path(self, ref: str) -> Path:
        return self._dir / f"{ref_key(ref)}.json"

    def get(self, ref: str, source: str) -> str | None:
        """The validator recorded for ``ref`` when fetched from ``source``, or None."""
        try:
            d = json.loads(self._path(ref).read_text(encoding="utf-8"))
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
            self._dir.mkdir(parents=True, exist_ok=True)
            path = self._path(ref)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
            tmp.write_text(json.dumps({"source": source, "validator": validator}))
            os.replace(tmp, path)

    def drop(self, ref: str) -> None:
        """Forget ``ref``'s validator."""
        with contextlib.suppress(OSError):
            self._path(ref).unlink()
