"""Job logging helpers: Celery's ``ignored`` lines are DEBUG, the expected kinds."""

from __future__ import annotations

import logging

import pytest

from ingestq import errdefs
from ingestq.tasks.joblog import EXPECTED_ERRORS, QuietIgnored


def _record(description: str) -> logging.LogRecord:
    record = logging.LogRecord("celery.app.trace", logging.INFO, __file__, 1, "m", None, None)
    record.data = {"description": description, "id": "j", "name": "ingestq.pull.finalize"}
    return record


def test_ignored_lines_are_debug_and_dropped_unless_debug_is_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet = QuietIgnored()
    logger = logging.getLogger("celery.app.trace")
    logger.setLevel(logging.INFO)
    assert not quiet.filter(_record("ignored"))
    assert quiet.filter(_record("raised expected"))
    logger.setLevel(logging.DEBUG)
    kept = _record("ignored")
    assert quiet.filter(kept) and kept.levelno == logging.DEBUG
    logger.setLevel(logging.NOTSET)


def test_unknown_and_internal_are_the_unexpected_kinds() -> None:
    assert errdefs.Canceled in EXPECTED_ERRORS and errdefs.PermissionDenied in EXPECTED_ERRORS
    assert errdefs.Unknown not in EXPECTED_ERRORS and errdefs.Internal not in EXPECTED_ERRORS
