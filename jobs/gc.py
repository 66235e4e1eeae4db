"""Garbage collection and disk usage of a store root as the jobs see it: the store's
mark and sweep (:mod:`ingestq.store.gc`, or :mod:`ingestq.s3.gc` for an S3 store) plus
the records of finished in-process jobs past their retention (``<root>/jobs/``), with
the settings' knobs.

Imports store and this package's settings and file records.
"""

from __future__ import annotations

import time
from dataclasses import replace

from ingestq.jobs.config import Settings
from ingestq.jobs.local.records import FileJobRecords
from ingestq.s3 import S3Store
from ingestq.s3 import gc as s3gc
from ingestq.store.digest import Digest
from ingestq.store.gc import GcReport, Usage, collect, usage
from ingestq.store.gc import image_trees as store_image_trees
from ingestq.store.local import LocalStore


def run_gc(store: LocalStore | S3Store, settings: Settings, *, dry_run: bool = False) -> GcReport:
    """One gc run over ``store`` and its job records; the report (see
    :func:`ingestq.store.gc.collect` and :func:`ingestq.s3.gc.collect` for what they
    raise)."""
    started = time.monotonic()
    options = settings.gc_options(dry_run=dry_run)
    if isinstance(store, S3Store):
        report, sync = s3gc.collect(store, options), settings.fsync
    else:
        report, sync = collect(store, options), store.fsync
    cutoff = time.time() - settings.gc_job_retention
    records = FileJobRecords(store.root, sync=sync).prune(cutoff, dry_run=dry_run)
    return replace(report, job_records=records, seconds=time.monotonic() - started)


def disk_usage(store: LocalStore | S3Store, settings: Settings) -> Usage:
    """What ``store`` holds and what a gc run would reclaim now (a dry run)."""
    if isinstance(store, S3Store):
        return s3gc.usage(store, run_gc(store, settings, dry_run=True))
    return usage(store, run_gc(store, settings, dry_run=True))


def image_trees(store: LocalStore | S3Store) -> dict[str, set[Digest]]:
    """Per recorded image of ``store``, every digest its tree reaches."""
    if isinstance(store, S3Store):
        return s3gc.image_trees(store)
    return store_image_trees(store)


__all__ = ["disk_usage", "image_trees", "run_gc"]
