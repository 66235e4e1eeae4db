"""One ingest directory, ``<root>/ingest/<sha256(ref)>/``, and how to read its Status.

Files: ``ref`` (the ref), ``startedat``, ``total``, ``expected`` and ``current`` (the name
of the data file that holds the ingest's bytes). Every writer owns one data file,
``data.<writer id>``, for its whole life; a writer that takes a ref over copies the prefix
it adopts into its own file, so a stale writer can never change bytes another commits.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import errdefs
from store.digest import Digest
from store.values import Holder, Status

DATA_PREFIX = "data."


def write_atomic(path: Path, text: str, *, sync: bool = False) -> None:
    """Replace ``path`` with ``text`` through a temp file and rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(text)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="surrogatepass")
    except FileNotFoundError:
        return None


def _ts(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None


@dataclass(frozen=True)
class IngestDir:
    """Paths and reads for one ingest directory (no locking: callers hold the ref lock to
    change it; readers tolerate files vanishing under them)."""

    path: Path

    @property
    def ref_file(self) -> Path:
        """The file holding the ingest's ref."""
        return self.path / "ref"

    def read_ref(self) -> str | None:
        """The stored ref, or None if the directory is incomplete or gone."""
        return _read(self.ref_file)

    def current_data(self) -> Path | None:
        """The data file the latest writer owns, or None."""
        name = _read(self.path / "current")
        if not name or not name.startswith(DATA_PREFIX) or "/" in name:
            return None
        return self.path / name.strip()

    def total(self) -> int:
        """The expected total size, 0 if unknown."""
        try:
            return max(int(_read(self.path / "total") or 0), 0)
        except ValueError:
            return 0

    def expected(self) -> Digest | None:
        """The expected digest recorded when the ingest started, if any."""
        text = _read(self.path / "expected")
        if not text:
            return None
        try:
            return Digest.parse(text.strip())
        except errdefs.InvalidArgument:
            return None

    def started_at(self) -> datetime | None:
        """When the ingest started."""
        return _ts(_read(self.path / "startedat"))

    def data_files(self) -> list[Path]:
        """Every data file present (the current one and leftovers of dead writers)."""
        try:
            return [p for p in self.path.iterdir() if p.name.startswith(DATA_PREFIX)]
        except FileNotFoundError:
            return []

    def status(self, ref: str, holder: Holder | None) -> Status:
        """Read the Status from disk. NotFound if the ingest does not exist (or vanished)."""
        stored = self.read_ref()
        if stored is None or stored != ref:
            raise errdefs.NotFound(f"reference {ref}")
        data = self.current_data()
        offset = 0
        updated: datetime | None = None
        if data is not None:
            try:
                st = data.stat()
                offset = st.st_size
                updated = datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)
            except FileNotFoundError:
                pass
        started = self.started_at()
        if started is None:
            try:
                started = datetime.fromtimestamp(self.ref_file.stat().st_mtime, UTC)
            except FileNotFoundError:
                raise errdefs.NotFound(f"reference {ref}") from None
        if updated is None or updated < started:
            updated = started
        return Status(
            ref=ref,
            offset=offset,
            total=self.total(),
            started_at=started,
            updated_at=updated,
            expected=self.expected(),
            holder=holder,
        )
