"""Progress rendering for the job commands: bars on a TTY, plain lines otherwise."""

from __future__ import annotations

import shutil


def human_bytes(n: float) -> str:
    """``1.5 MiB`` style sizes."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def bar(offset: int, total: int, width: int) -> str:
    """``[#####.....]``; a spinner-less open bar when the total is unknown."""
    if width < 3:
        return ""
    inner = width - 2
    if total <= 0:
        return "[" + "?" * min(inner, 3) + " " * (inner - min(inner, 3)) + "]"
    filled = min(inner, int(inner * offset / total))
    return "[" + "#" * filled + "." * (inner - filled) + "]"


def line(label: str, offset: int, total: int, rate: float, tty: bool) -> str:
    """One status line: label, bytes, percentage, rate, and a bar on a TTY."""
    pct = f"{100.0 * offset / total:5.1f}%" if total > 0 else "  ?  "
    amount = f"{human_bytes(offset)}/{human_bytes(total) if total else '?'}"
    speed = f"{human_bytes(rate)}/s" if rate else ""
    text = f"{label}  {amount}  {pct}  {speed}".rstrip()
    if not tty:
        return text
    columns = shutil.get_terminal_size((100, 20)).columns
    width = max(columns - len(text) - 2, 0)
    return f"{text}  {bar(offset, total, min(width, 40))}"
