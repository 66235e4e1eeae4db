"""Progress rendering for the job commands: one redrawn status line on a TTY, a line per
change otherwise, or JSON events (one object per line) for scripts.

A status line names what is transferred (the file name, URL or image reference), then
bytes done of the total (``?`` while unknown), the percentage, the rate and the time
left::

    https://example.com/big.iso  12.0 MiB/64.0 MiB   18.8%  4.1 MiB/s  ETA 13s  [#####....]

On a TTY each redraw returns to the start of the line and clears to its end (no
leftover characters), and every message printed meanwhile (a retry, an error) starts on
a line of its own.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from typing import Any, TextIO

#: The weight of the newest sample in the smoothed rate.
SMOOTHING = 0.3
#: The shortest interval between two rate samples, seconds.
MIN_SAMPLE = 0.2
#: Clear from the cursor to the end of the line.
CLEAR_EOL = "\x1b[K"


def human_bytes(n: float) -> str:
    """``1.5 MiB`` style sizes."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h01m``."""
    s = max(int(seconds + 0.5), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def shorten(name: str, width: int) -> str:
    """``name`` cut in the middle with ``…`` to at most ``width`` characters (the end of
    a URL or path is what tells files apart)."""
    if len(name) <= width or width < 5:
        return name
    keep = width - 1
    return name[: keep // 3] + "…" + name[len(name) - (keep - keep // 3) :]


def bar(offset: int, total: int, width: int) -> str:
    """``[#####.....]``; ``[???   ]`` when the total is unknown."""
    if width < 3:
        return ""
    inner = width - 2
    if total <= 0:
        return "[" + "?" * min(inner, 3) + " " * (inner - min(inner, 3)) + "]"
    filled = min(inner, int(inner * offset / total))
    return "[" + "#" * filled + "." * (inner - filled) + "]"


def eta(offset: int, total: int, rate: float) -> float | None:
    """Seconds left at ``rate``, or None when the total or the rate is unknown."""
    if total <= 0 or rate <= 0 or offset > total:
        return None
    return (total - offset) / rate


def line(label: str, offset: int, total: int, rate: float, tty: bool) -> str:
    """One status line: label, bytes, percentage, rate, ETA, and a bar on a TTY."""
    pct = f"{100.0 * offset / total:5.1f}%" if total > 0 else "  ?  "
    amount = f"{human_bytes(offset)}/{human_bytes(total) if total else '?'}"
    speed = f"{human_bytes(rate)}/s" if rate else ""
    left = eta(offset, total, rate)
    when = f"ETA {human_seconds(left)}" if left is not None else ""
    text = "  ".join(p for p in (label, amount, pct, speed, when) if p)
    if not tty:
        return text
    columns = shutil.get_terminal_size((100, 20)).columns
    width = max(columns - len(text) - 3, 0)
    return f"{text}  {bar(offset, total, min(width, 40))}"


class Meter:
    """The smoothed transfer rate of successive offsets."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None
        self.rate = 0.0

    def sample(self, offset: int, now: float | None = None) -> float:
        """Take ``offset`` at ``now`` (default: the monotonic clock); the rate."""
        now = time.monotonic() if now is None else now
        if self._last is None or offset < self._last[1]:
            self._last = (now, offset)
            return self.rate
        then, before = self._last
        if now - then < MIN_SAMPLE:
            return self.rate
        current = (offset - before) / (now - then)
        self.rate = current if self.rate == 0.0 else (
            SMOOTHING * current + (1 - SMOOTHING) * self.rate
        )  # fmt: skip
        self._last = (now, offset)
        return self.rate


class Display:
    """Where a waiting command reports: ``mode`` is ``tty`` (one status line redrawn in
    place), ``plain`` (a line per change of message), ``json`` (one JSON object per
    event) or ``quiet`` (nothing)."""

    def __init__(self, mode: str, out: TextIO | None = None) -> None:
        self.mode = mode
        self._out = out if out is not None else sys.stderr
        self._drawn = False
        self._last_message = ""

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    def status(self, text: str) -> None:
        """Redraw the status line (TTY only)."""
        if self.mode != "tty":
            return
        columns = shutil.get_terminal_size((100, 20)).columns
        self._write("\r" + text[: max(columns - 1, 1)] + CLEAR_EOL)
        self._drawn = True

    def message(self, text: str) -> None:
        """Print ``text`` on a line of its own, once per distinct text in a row (TTY
        and plain)."""
        if self.mode not in ("tty", "plain") or text == self._last_message:
            return
        self._last_message = text
        self.finish()
        self._write(text + "\n")

    def event(self, kind: str, **fields: Any) -> None:
        """One JSON event ``{"event": kind, ...}`` (json mode only)."""
        if self.mode != "json":
            return
        self._write(json.dumps({"event": kind, **fields}, sort_keys=True, default=str) + "\n")

    def finish(self) -> None:
        """End the status line, so that what follows starts on a line of its own."""
        if self._drawn:
            self._write("\r" + CLEAR_EOL)
            self._drawn = False


def mode_for(quiet: bool, as_json: bool, stream: TextIO | None = None) -> str:
    """The display mode of a command's flags and its stderr."""
    if quiet:
        return "quiet"
    if as_json:
        return "json"
    stream = stream if stream is not None else sys.stderr
    return "tty" if stream.isatty() else "plain"
