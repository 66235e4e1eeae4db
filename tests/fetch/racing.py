"""The symlink-swap race the file-source tests run: a thread that keeps swapping a
directory inside a root with a symlink to one outside, while the test opens through it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ingestq import errdefs

#: The kinds an open refused by the race (the path changed under it) may fail with.
REFUSED = (errdefs.PermissionDenied, errdefs.NotFound, errdefs.FailedPrecondition)


def race(
    d: Path, outside: Path, attempt: Callable[[], str], *, attempts: int = 2000
) -> tuple[Counter[str], int]:
    """Run ``attempt`` ``attempts`` times while ``d`` keeps being swapped with a symlink
    to ``outside``, and on (up to 10 times as many, at most 60 s in all) until both an
    attempt that returned and one that was refused were seen, so a loaded machine whose
    scheduler favours one side still exercises both; what the attempts returned,
    counted, and how many were refused (raised one of :data:`REFUSED`)."""
    saved, link = d.with_name(d.name + ".saved"), d.with_name(d.name + ".link")
    link.symlink_to(outside)
    stop = threading.Event()

    def swapper() -> None:
        while not stop.is_set():
            os.rename(d, saved)  # d becomes the symlink to the outside directory
            os.rename(link, d)
            os.rename(d, link)  # and the directory again
            os.rename(saved, d)

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    seen: Counter[str] = Counter()
    refused = 0
    deadline = time.monotonic() + 60
    try:
        for tried in range(attempts * 10):
            if time.monotonic() >= deadline:
                break
            if tried >= attempts and seen and refused:
                break
            try:
                seen[attempt()] += 1
            except REFUSED:
                refused += 1
    finally:
        stop.set()
        thread.join(30)
    return seen, refused
