"""Job records: what a backend keeps about a job beyond running it, behind one small
store interface (dramatiq's result backends are the model).

A record is a flat ``str -> str`` mapping (nested values are JSON text), the same in
every store. The fields both backends write (:data:`FIELDS` names them):

==============  ==================================================================
``created_at``  when the record was created (Unix seconds), set by the store
``kind``        ``ingest`` or ``pull``
``ref``         the ingest ref (a pull's: its root manifest's, once planned)
``source``      what the job reads from (a URL, a path, an image reference)
``request``     the request, JSON
``error``       the errdefs error record of a failure, JSON
``plan``        a pull's plan, JSON (written once the manifests are in)
``parent``      the pull a child ingest belongs to
``attempt``     while retrying: the attempt that failed (1-based)
``max_attempts`` while retrying: attempts in all (empty: unbounded)
``next_at``     while retrying: when the next attempt starts (Unix seconds)
``max_retries`` the retries the producer allowed (``--retries``), when it chose
==============  ==================================================================

The in-process backend adds ``state``, ``reason``, ``result`` (JSON), ``pid``,
``host`` and ``updated_at`` (Celery's result meta holds those for queued jobs); the
queue adds ``redeliveries``. Cancellation is a flag beside the record
(:class:`CancelFlags`), so a job's own updates never overwrite a cancel request.

Implementations: :class:`MemoryJobRecords` (here), the file store of the in-process
backend (:class:`ingestq.jobs.local.records.FileJobRecords`) and the Redis store of
the queue (:class:`ingestq.tasks.records.RedisJobRecords`). All pass the contract in
:mod:`ingestq.jobs.testing`.

Everything read back from a record store is untrusted (a record can be tampered with):
JSON fields are decoded by :func:`load_json`, bounded in size and depth, and a malformed
field is InvalidArgument naming the job (:func:`decode_error_field`), never a traceback.

Imports errdefs and the store's ref rule.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from ingestq import errdefs
from ingestq.store.rules import validate_ref

#: The record fields both backends write (see the module docstring).
FIELDS = (
    "created_at", "kind", "ref", "source", "request", "error", "plan", "parent",
    "attempt", "max_attempts", "next_at", "max_retries",
)  # fmt: skip

#: The most records :meth:`JobRecords.list` returns by default.
LIST_LIMIT = 1000

KIND_INGEST = "ingest"
KIND_PULL = "pull"

#: The longest JSON text read back from a record or a result (the gRPC message limit).
MAX_JSON_BYTES = 16 << 20
#: The deepest nesting of arrays and objects accepted in JSON read back.
MAX_JSON_DEPTH = 64
#: The most fields a record read back may have.
MAX_FIELDS = 64


class JobRecords(Protocol):
    """Creates, reads and updates job records. Every method raises Unavailable when
    the store cannot be reached."""

    def create(
        self, job_id: str, fields: Mapping[str, str], idempotency_key: str | None = None
    ) -> tuple[str, bool]:
        """Record a new job with ``fields`` (plus ``created_at``); returns
        ``(job id, created)``. When ``idempotency_key`` was used before or ``job_id``
        already has a record, nothing is written and the existing job's id comes back
        with ``created=False``: the caller must not start the job again."""
        ...

    def get(self, job_id: str) -> dict[str, str]:
        """A copy of the record's fields; empty when the job is unknown (or expired)."""
        ...

    def update(self, job_id: str, fields: Mapping[str, str]) -> None:
        """Merge ``fields`` into the record (an unknown job gets a record of just
        these fields)."""
        ...

    def list(self, limit: int = LIST_LIMIT) -> list[tuple[str, dict[str, str]]]:
        """Up to ``limit`` ``(job id, record)`` pairs of the jobs created with
        :meth:`create`, newest first (expired ones are left out; a record that cannot
        be read is skipped)."""
        ...


class CancelFlags(Protocol):
    """The cancel flag of each job, kept beside its record."""

    def request_cancel(self, job_id: str) -> None:
        """Set ``job_id``'s cancel flag (the running job polls it)."""
        ...

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked to cancel ``job_id`` (False when that cannot be read)."""
        ...


class JobRecordStore(JobRecords, CancelFlags, Protocol):
    """A job record store: records and their cancel flags."""


def _depth(value: Any) -> int:
    """How deeply ``value`` nests arrays and objects (iteratively: no recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def load_json(text: str | bytes, what: str) -> Any:
    """Decode JSON ``text`` read back from a store. InvalidArgument ``<what>: ...`` when
    it is longer than :data:`MAX_JSON_BYTES`, not JSON (or not UTF-8), or nests arrays
    and objects deeper than :data:`MAX_JSON_DEPTH`. Never raises anything else."""
    if not isinstance(text, str | bytes):
        raise errdefs.InvalidArgument(f"{what}: not JSON text")
    if len(text) > MAX_JSON_BYTES:
        raise errdefs.InvalidArgument(f"{what}: {len(text)} bytes, over {MAX_JSON_BYTES}")
    try:
        value: Any = json.loads(text)
    except RecursionError:
        raise errdefs.InvalidArgument(f"{what}: nested deeper than {MAX_JSON_DEPTH}") from None
    except ValueError as e:  # UnicodeDecodeError included
        raise errdefs.InvalidArgument(f"{what}: invalid JSON: {str(e)[:200]}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise errdefs.InvalidArgument(f"{what}: nested deeper than {MAX_JSON_DEPTH}")
    return value


def check_record(job_id: str, record: dict[str, str]) -> dict[str, str]:
    """``record`` (as read back from a store) if its fields are what a backend writes:
    at most :data:`MAX_FIELDS` string fields of at most :data:`MAX_JSON_BYTES` each, a
    ``kind`` of ``ingest`` or ``pull``, a ``ref`` that is empty or valid
    (:func:`ingestq.store.rules.validate_ref`). InvalidArgument ``job <id>: malformed
    job record: ...`` otherwise. JSON fields are checked when decoded."""
    what = f"job {job_id}: malformed job record"
    if len(record) > MAX_FIELDS:
        raise errdefs.InvalidArgument(f"{what}: {len(record)} fields")
    for name, value in record.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise errdefs.InvalidArgument(f"{what}: field {str(name)[:40]!r} is not text")
        if len(value) > MAX_JSON_BYTES:
            raise errdefs.InvalidArgument(f"{what}: field {name[:40]!r} is too long")
    if record.get("kind", KIND_INGEST) not in (KIND_INGEST, KIND_PULL):
        raise errdefs.InvalidArgument(f"{what}: kind {record['kind'][:40]!r}")
    ref = record.get("ref", "")
    if ref:
        try:
            validate_ref(ref)
        except errdefs.InvalidArgument as e:
            raise errdefs.wrap(e, what) from None
    return record


def error_text(err: BaseException) -> str:
    """The ``error`` field for ``err``: its errdefs error record, compact JSON."""
    return json.dumps(errdefs.to_json_dict(err), separators=(",", ":"))


def decode_error_field(job_id: str, text: str | None) -> errdefs.ErrdefsError | None:
    """The errdefs error of job ``job_id``'s ``error`` field, or None when absent.
    InvalidArgument ``job <id>: malformed error record: ...`` when it is unreadable
    (see :func:`load_json`). Only ever constructs a registered errdefs kind."""
    if not text:
        return None
    what = f"job {job_id}: malformed error record"
    obj = load_json(text, what)
    if not isinstance(obj, Mapping):
        raise errdefs.InvalidArgument(f"{what}: not an object")
    try:
        return errdefs.from_json_dict(obj)
    except errdefs.InvalidArgument as e:
        raise errdefs.wrap(e, what) from None


def error_from_text(text: str | None) -> errdefs.ErrdefsError | None:
    """The errdefs error of an ``error`` field, or None when absent or unreadable. Only
    ever constructs a registered errdefs kind."""
    try:
        return decode_error_field("?", text)
    except errdefs.InvalidArgument:
        return None


def record_error(records: JobRecords, job_id: str, err: BaseException) -> None:
    """Store ``err`` as ``job_id``'s ``error`` field. Best effort: an unreachable
    store is ignored (the backend still reports the failure its own way)."""
    try:
        records.update(job_id, {"error": error_text(err)})
    except errdefs.Unavailable:
        return


def json_field(record: Mapping[str, str], name: str) -> Any:
    """The JSON value of field ``name``, or None when absent or unreadable (see
    :func:`load_json`)."""
    text = record.get(name)
    if not text:
        return None
    try:
        return load_json(text, name)
    except errdefs.InvalidArgument:
        return None


class MemoryJobRecords:
    """Job records in this process's memory (the :class:`JobRecordStore` protocol):
    for tests and for embedding a backend that needs no persistence. Thread-safe."""

    def __init__(self) -> None:
        self._records: dict[str, dict[str, str]] = {}
        self._keys: dict[str, str] = {}
        self._cancel: set[str] = set()
        self._mutex = threading.Lock()

    def create(
        self, job_id: str, fields: Mapping[str, str], idempotency_key: str | None = None
    ) -> tuple[str, bool]:
        with self._mutex:
            if idempotency_key is not None:
                existing = self._keys.setdefault(idempotency_key, job_id)
                if existing != job_id:
                    return existing, False
            if job_id in self._records:
                return job_id, False
            self._records[job_id] = {**fields, "created_at": f"{time.time():.6f}"}
            return job_id, True

    def get(self, job_id: str) -> dict[str, str]:
        with self._mutex:
            return dict(self._records.get(job_id, {}))

    def update(self, job_id: str, fields: Mapping[str, str]) -> None:
        with self._mutex:
            self._records.setdefault(job_id, {}).update(fields)

    def list(self, limit: int = LIST_LIMIT) -> list[tuple[str, dict[str, str]]]:
        with self._mutex:
            items = [(k, dict(v)) for k, v in self._records.items() if "created_at" in v]
        items.sort(key=lambda kv: float(kv[1]["created_at"]), reverse=True)
        return items[: max(limit, 0)]

    def request_cancel(self, job_id: str) -> None:
        with self._mutex:
            self._cancel.add(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        with self._mutex:
            return job_id in self._cancel


__all__ = [
    "FIELDS",
    "KIND_INGEST",
    "KIND_PULL",
    "LIST_LIMIT",
    "MAX_FIELDS",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "CancelFlags",
    "JobRecordStore",
    "JobRecords",
    "MemoryJobRecords",
    "check_record",
    "decode_error_field",
    "error_from_text",
    "error_text",
    "json_field",
    "load_json",
    "record_error",
]
