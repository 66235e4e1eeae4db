"""Job records in files under the store root: the record store of the in-process
backend (the :class:`ingestq.jobs.records.JobRecordStore` protocol).

Each record is a JSON object at ``RootLayout(root).job_record(<name>)``
(``<root>/jobs/<name>.json``), replaced atomically (:mod:`ingestq.store.atomic`) on
every update, so any process of the host that opens the same root reads it whole. The
name is the job id when it is a plain name (letters, digits, ``-``; at most 100
characters), else a hash of it. Beside the record: ``<name>.cancel`` (the cancel flag,
a file of its own so the job's updates never overwrite it) and, per idempotency key,
``<hash>.key`` (the id of the job the key created). A record is created by linking a
complete file into place, so it appears whole and only once. The file also holds the
job id (``_job_id``, not a record field) so that :meth:`FileJobRecords.list` can name
jobs whose file name is a hash.

Records written by earlier versions (numbers and nested objects as JSON values) are
read as text fields like any other.

Imports store (layout, atomic writes) and errdefs.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ingestq import errdefs
from ingestq.jobs.api import JobState
from ingestq.store.atomic import fsync_dir, sweep_temp_files, temp_name, write_json
from ingestq.store.layout import RootLayout
from ingestq.store.oserrors import from_os_error

#: The states of a finished job (whose record :meth:`FileJobRecords.prune` may remove).
_FINISHED = frozenset(s.value for s in JobState if s.done)

#: The longest job id used as a file name as it is.
MAX_PLAIN_ID = 100
#: The key under which a record file keeps its job id (not a record field).
ID_KEY = "_job_id"


def _os_error(err: OSError, name: str) -> errdefs.ErrdefsError:
    """ResourceExhausted for a full disk or quota (nothing a retry fixes soon),
    Unavailable for any other failure to read or write record ``name``."""
    out = from_os_error(err, f"job record {name}")
    if isinstance(out, errdefs.ResourceExhausted):
        return out
    return errdefs.Unavailable(f"job record {name}: {err}")


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class FileJobRecords:
    """Job records of the store at ``root`` (see the module docstring). ``sync``
    fsyncs each write (the store's ``fsync`` setting)."""

    def __init__(self, root: Path, *, sync: bool = True) -> None:
        self._layout = RootLayout(root)
        self._sync = sync
        self._layout.jobs.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        """The store root the records live under."""
        return self._layout.root

    def path(self, job_id: str) -> Path:
        """Where ``job_id``'s record lives."""
        plain = job_id.replace("-", "").isalnum() and len(job_id) <= MAX_PLAIN_ID
        name = job_id if plain else (
            uuid.uuid5(uuid.NAMESPACE_URL, job_id).hex
        )  # fmt: skip
        return self._layout.job_record(name)

    def _cancel_path(self, job_id: str) -> Path:
        return self.path(job_id).with_suffix(".cancel")

    def _key_path(self, idempotency_key: str) -> Path:
        name = uuid.uuid5(uuid.NAMESPACE_URL, f"idempotency:{idempotency_key}").hex
        return self._layout.job_record(name).with_suffix(".key")

    def _create_exclusive(self, path: Path, obj: Mapping[str, str]) -> bool:
        """Write ``obj`` to ``path`` unless it exists; True when written."""
        tmp = temp_name(path, "new")
        try:
            write_json(tmp, dict(obj), sync=self._sync)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        except OSError as e:
            raise _os_error(e, path.name) from e
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if self._sync:
            fsync_dir(path.parent)
        return True

    def _read_record(self, path: Path) -> dict[str, str] | None:
        """The record at ``path`` without its id key (None when absent)."""
        record = self._read(path)
        if record is not None:
            record.pop(ID_KEY, None)
        return record

    def _read(self, path: Path) -> dict[str, str] | None:
        try:
            obj: Any = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise errdefs.DataLoss(f"job record {path.name} is unreadable: {e}") from e
        except OSError as e:
            raise _os_error(e, path.name) from e
        if not isinstance(obj, dict):
            raise errdefs.DataLoss(f"job record {path.name} is not an object")
        return {str(k): _text(v) for k, v in obj.items() if v is not None}

    def create(
        self, job_id: str, fields: Mapping[str, str], idempotency_key: str | None = None
    ) -> tuple[str, bool]:
        """See :meth:`ingestq.jobs.records.JobRecords.create`. ResourceExhausted when
        the disk is full, Unavailable when the directory cannot be written otherwise."""
        if idempotency_key is not None:
            key_path = self._key_path(idempotency_key)
            if not self._create_exclusive(key_path, {"job": job_id}):
                existing = (self._read_record(key_path) or {}).get("job", job_id)
                if existing != job_id:
                    return existing, False
        record = {**fields, "created_at": f"{time.time():.6f}", ID_KEY: job_id}
        return job_id, self._create_exclusive(self.path(job_id), record)

    def get(self, job_id: str) -> dict[str, str]:
        """See :meth:`ingestq.jobs.records.JobRecords.get`. DataLoss when the record
        file is not a JSON object."""
        return self._read_record(self.path(job_id)) or {}

    def list(self, limit: int = 1000) -> list[tuple[str, dict[str, str]]]:
        """See :meth:`ingestq.jobs.records.JobRecords.list`: the record files of the
        root, newest first by ``created_at``; unreadable ones are skipped."""
        out: list[tuple[float, str, dict[str, str]]] = []
        try:
            paths = list(self._layout.jobs.glob("*.json"))
        except OSError as e:
            raise _os_error(e, "jobs") from e
        for path in paths:
            if path.name.startswith("."):
                continue
            try:
                record = self._read(path)
            except errdefs.ErrdefsError:
                continue
            if not record or "created_at" not in record:
                continue
            job_id = record.pop(ID_KEY, None) or path.stem
            try:
                created = float(record["created_at"])
            except ValueError:
                created = 0.0
            out.append((created, job_id, record))
        out.sort(key=lambda item: item[0], reverse=True)
        return [(job_id, record) for _, job_id, record in out[: max(limit, 0)]]

    def update(self, job_id: str, fields: Mapping[str, str]) -> None:
        """See :meth:`ingestq.jobs.records.JobRecords.update`. Only the job's own
        runner updates a record, so read-merge-replace needs no lock."""
        path = self.path(job_id)
        try:
            record = self._read(path) or {}
        except errdefs.DataLoss:
            record = {}
        record.update(fields)
        record.setdefault(ID_KEY, job_id)
        try:
            write_json(path, record, sync=self._sync)
        except OSError as e:
            raise _os_error(e, path.name) from e

    def request_cancel(self, job_id: str) -> None:
        """Create the job's ``.cancel`` file."""
        try:
            self._cancel_path(job_id).touch()
        except OSError as e:
            raise _os_error(e, job_id) from e

    def cancel_requested(self, job_id: str) -> bool:
        """Whether the job's ``.cancel`` file exists."""
        return self._cancel_path(job_id).exists()

    def prune(self, older_than: float, *, dry_run: bool = False) -> int:
        """Remove the records of finished jobs (succeeded, failed, canceled) last
        written before ``older_than`` (a Unix time), with their cancel flags, and the
        idempotency keys whose job record is gone; the number of records (with
        ``dry_run``, that would go). Unreadable records are left alone."""
        directory = self._layout.jobs
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return 0
        count = 0
        for entry in entries:
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            try:
                if entry.stat().st_mtime >= older_than:
                    continue
                record = self._read(Path(entry.path)) or {}
            except (OSError, errdefs.ErrdefsError):
                continue
            if record.get("state") not in _FINISHED:
                continue
            count += 1
            if not dry_run:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    Path(entry.path).with_suffix(".cancel").unlink(missing_ok=True)
        if not dry_run:
            for entry in entries:
                if entry.name.endswith(".key"):
                    self._prune_key(Path(entry.path), older_than)
        # Temporary files of writers killed before their rename or link.
        sweep_temp_files(directory, older_than, dry_run=dry_run)
        return count

    def _prune_key(self, path: Path, older_than: float) -> None:
        try:
            if path.stat().st_mtime >= older_than:
                return
            job = (self._read(path) or {}).get("job")
        except (OSError, errdefs.ErrdefsError):
            return
        if job is None or not self.path(job).exists():
            with contextlib.suppress(OSError):
                path.unlink()


__all__ = ["FileJobRecords"]
