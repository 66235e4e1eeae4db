"""A source type for tests only, loaded into real workers with ``celery -I``:
``{"type": "raise", "kind": "<errdefs kind name or a builtin>", "message": "...",
"details": {...}}`` raises that error when opened; and, with ``TESTS_BATCH_GATE`` set,
a gate that holds a batch's pool process after a given job (:data:`GATE_ENV`)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from ingestq import errdefs
from ingestq.fetch.options import FetchOptions
from ingestq.fetch.source import Opened, Source
from ingestq.fetch.specs import register


class RaisingSource:
    def __init__(self, spec: Mapping[str, Any]) -> None:
        self._spec = spec

    @property
    def name(self) -> str:
        return f"raise:{self._spec.get('kind')}"

    def open(self, offset: int = 0) -> Opened:
        kind = str(self._spec.get("kind"))
        message = str(self._spec.get("message", ""))
        if kind == "ValueError":
            raise ValueError(message)
        if kind == "SystemExitLike":
            raise KeyError(message)
        details = self._spec.get("details") or None
        raise errdefs.KINDS[kind](message, details)


def _factory(spec: Mapping[str, Any], options: FetchOptions) -> Source:
    return RaisingSource(spec)


register("raise", _factory)


#: A file path (worker environment): a batch's pool process holds after the job whose
#: id the file names has succeeded, until ``<path>.release`` exists (at most a minute),
#: and says so by creating ``<path>.held``. Lets a test kill the pool mid-batch.
GATE_ENV = "TESTS_BATCH_GATE"


class _BatchGate(logging.Filter):
    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            with open(self._path) as f:
                job_id = f.read().strip()
        except FileNotFoundError:
            return True
        if job_id and record.getMessage().startswith(f"job {job_id} succeeded"):
            open(self._path + ".held", "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists(self._path + ".release") and time.monotonic() < deadline:
                time.sleep(0.01)
        return True


if os.environ.get(GATE_ENV):
    logging.getLogger("ingestq.tasks.batch_task").addFilter(_BatchGate(os.environ[GATE_ENV]))
