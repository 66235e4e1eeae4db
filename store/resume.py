"""Resume hints: what a source said when an ingest started, kept beside the store so a
later attempt in any process can resume safely.

* the validator (ETag, Last-Modified, file identity), sent back as If-Range so a resume
  never splices two versions of a resource;
* the total size the source announced, so a resume never commits fewer bytes than were
  announced (a server answering the resume with ``416 bytes */<offset>``).

Files: ``resume/<sha256(ref)>.json`` under the store root (see :mod:`store.layout`),
holding ``{"source": name, "validator": v, "total": n}`` (either of the last two may be
absent). They are advisory: a missing or unreadable hint only means the ingest restarts
from 0 (or, with an expected digest, resumes unguarded and is checked at commit).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ingestq.store.atomic import write_json
from ingestq.store.layout import RootLayout
from ingestq.store.ownfiles import read_own

#: The largest record read (a hint is a few hundred bytes).
MAX_RECORD = 64 << 10


@dataclass(frozen=True)
class Hint:
    """What a source said when an ingest of it started: its validator (None when it had
    none) and the total size it announced (0 when unknown)."""

    validator: str | None = None
    total: int = 0


class ResumeHints:
    """Hints per ref under the root's ``resume/``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._layout = RootLayout(Path(root))

    def read(self, ref: str, source: str) -> Hint | None:
        """The hint recorded for ``ref`` when fetched from ``source``, or None (none,
        another source's, or unreadable; a malformed field reads as absent)."""
        try:
            d = json.loads(read_own(self._layout.resume_hint(ref), MAX_RECORD))
        except (OSError, ValueError):
            return None
        if not isinstance(d, dict) or d.get("source") != source:
            return None
        v, total = d.get("validator"), d.get("total")
        validator = v if isinstance(v, str) and v else None
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            total = 0
        return Hint(validator, total)

    def get(self, ref: str, source: str) -> str | None:
        """The validator recorded for ``ref`` when fetched from ``source``, or None."""
        hint = self.read(ref, source)
        return hint.validator if hint is not None else None

    def put(self, ref: str, source: str, validator: str | None, total: int = 0) -> None:
        """Record ``ref``'s validator and announced ``total`` (or, with neither, forget
        the hint). Best effort."""
        if validator is None and total <= 0:
            self.drop(ref)
            return
        hint: dict[str, object] = {"source": source}
        if validator is not None:
            hint["validator"] = validator
        if total > 0:
            hint["total"] = total
        with contextlib.suppress(OSError):
            self._layout.resume.mkdir(parents=True, exist_ok=True)
            # Not fsynced: a hint lost in a crash only costs a restart from offset 0.
            write_json(self._layout.resume_hint(ref), hint, sync=False)

    def drop(self, ref: str) -> None:
        """Forget ``ref``'s hint."""
        with contextlib.suppress(OSError):
            self._layout.resume_hint(ref).unlink()
