"""Garbage collection and disk usage of a store root as the jobs see it: the store's
mark and sweep (:mod:`ingestq.store.gc`) plus the records of finished in-process jobs
past their retention (``<root>/jobs/``), with the settings' knobs.

Imports store and this package's settings and file records.
"""

from __future__ import annotations

import time
from dataclasses import replace

from ingestq.jobs.config import Settings
from ingestq.jobs.local.records import FileJobRecords
from ingestq.store.gc import GcReport, Usage, collect, usage
from ingestq.store.local import LocalStore


def run_gc(store: LocalStore, settings: Settings, *, dry_run: bool = False) -> GcReport:
    """One gc run over ``store`` and its job records; the report (see
    :func:`ingestq.store.gc.collect` for what it raises)."""
    started = time.monotonic()
    report = collect(store, settings.gc_options(dry_run=dry_run))
    records = FileJobRecords(store.root, sync=store.fsync).prune(
        time.time() - settings.gc_job_retention, dry_run=dry_run
    )
    return replace(report, job_records=records, seconds=time.monotonic() - started)


def disk_usage(store: LocalStore, settings: Settings) -> Usage:
    """What ``store`` holds and what a gc run would reclaim now (a dry run)."""
    return usage(store, run_gc(store, settings, dry_run=True))


__all__ = ["disk_usage", "run_gc"]
