"""Worker logging of job outcomes: expected outcomes without tracebacks, the finalize
poll at DEBUG, and JSON log lines.

* :data:`EXPECTED_ERRORS`: the errdefs kinds a job may end with in normal operation
  (every kind but Unknown and Internal). The tasks declare them as Celery ``throws``,
  so Celery logs them ``raised expected`` at INFO with kind and message, no traceback;
  anything else keeps Celery's ERROR with its traceback.
* :class:`QuietIgnored`: Celery logs every ``Ignore`` (the pull finalize re-queueing
  itself while children run) at INFO; this filter makes them DEBUG records, kept only
  when the logger is enabled for DEBUG.
* :class:`JsonFormatter`: one JSON object per line with ``time``, ``level``,
  ``logger``, ``message`` and, for a job's lines, ``job_id``, ``task``, ``ref``,
  ``source``, ``digest`` and ``kind`` (the error kind of a failure). Enabled on a worker
  by ``INGESTQ_JSON_LOGS=1`` (``ingestq worker --json-logs``) through
  :func:`install_json_logs`.

The job fields come from the task being run in this thread (Celery's ``task_prerun``,
``task_success`` and ``task_postrun`` signals, connected by :func:`connect`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from celery import signals

from ingestq import errdefs
from ingestq.fetch.specs import source_name

#: The kinds a job ends with in normal operation (Celery ``throws``).
EXPECTED_ERRORS: tuple[type[errdefs.ErrdefsError], ...] = tuple(
    kind
    for kind in dict.fromkeys(errdefs.KINDS.values())
    if kind not in (errdefs.Unknown, errdefs.Internal)
)
#: The environment variable that turns JSON log lines on.
JSON_LOGS_ENV = "INGESTQ_JSON_LOGS"

_current = threading.local()
_KIND = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\(")


def _job_fields(task_id: str, task: str, args: Any) -> dict[str, str]:
    fields = {"job_id": task_id, "task": task}
    request = args[0] if isinstance(args, list | tuple) and args else None
    if isinstance(request, Mapping):
        if isinstance(request.get("ref"), str) and request["ref"]:
            fields["ref"] = request["ref"]
        source = request.get("source")
        if isinstance(source, Mapping):
            fields["source"] = source_name(source)
        elif isinstance(request.get("reference"), str):
            fields["source"] = request["reference"]
        elif isinstance(request.get("name"), str):
            fields["source"] = request["name"]
    return fields


def _prerun(task_id: str = "", task: Any = None, args: Any = None, **_: Any) -> None:
    _current.fields = _job_fields(task_id or "", getattr(task, "name", "") or "", args)


def _success(result: Any = None, **_: Any) -> None:
    fields = getattr(_current, "fields", None)
    if fields is not None and isinstance(result, Mapping):
        digest = result.get("digest") or (result.get("target") or {}).get("digest")
        if isinstance(digest, str):
            fields["digest"] = digest


def _postrun(**_: Any) -> None:
    _current.fields = None


@contextlib.contextmanager
def job_fields(job_id: str, task: str, request: Mapping[str, Any]) -> Iterator[dict[str, str]]:
    """Within the block, this thread's log lines carry job ``job_id``'s fields (as if
    ``task`` ran with ``request``): for a job run inside another task (a batch's jobs).
    Yields the fields, to add the ``digest`` or ``kind`` once known; the task's own
    fields come back after the block."""
    before = getattr(_current, "fields", None)
    _current.fields = _job_fields(job_id, task, [request])
    try:
        yield _current.fields
    finally:
        _current.fields = before


def connect() -> None:
    """Follow the task run in each thread (for :class:`JsonFormatter`'s job fields)."""
    signals.task_prerun.connect(_prerun, weak=False)
    signals.task_success.connect(_success, weak=False)
    signals.task_postrun.connect(_postrun, weak=False)


class QuietIgnored(logging.Filter):
    """Celery's ``ignored`` task lines become DEBUG (dropped unless DEBUG is on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for an ``ignored`` line of a logger not enabled for DEBUG."""
        data = getattr(record, "data", None)
        if isinstance(data, Mapping) and data.get("description") == "ignored":
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line; a traceback, when there is one, in ``traceback``."""
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(_current, "fields", None) or {})
        data = getattr(record, "data", None)
        if isinstance(data, Mapping):
            if data.get("id"):
                out["job_id"] = str(data["id"])
            if data.get("name"):
                out["task"] = str(data["name"])
            exc = data.get("exc")
            m = _KIND.match(exc) if isinstance(exc, str) else None
            if m is not None:
                out["kind"] = m.group(1)
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, sort_keys=True)


def install_json_logs(logger: logging.Logger) -> None:
    """Give every handler of ``logger`` the :class:`JsonFormatter`."""
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())


__all__ = [
    "EXPECTED_ERRORS",
    "JSON_LOGS_ENV",
    "JsonFormatter",
    "QuietIgnored",
    "connect",
    "install_json_logs",
    "job_fields",
]
