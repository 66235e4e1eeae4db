"""jobs/ stays below tasks/: no module of ingestq.jobs imports ingestq.tasks, Celery,
Redis or gRPC (statically, at any level: module top, functions, TYPE_CHECKING)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

JOBS = Path(__file__).resolve().parents[2] / "jobs"
FORBIDDEN = ("ingestq.tasks", "ingestq.api", "ingestq.worker", "celery", "kombu", "redis",
             "grpc")  # fmt: skip


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted(JOBS.rglob("*.py")), ids=lambda p: str(p.relative_to(JOBS)))
def test_jobs_imports_nothing_above_it(path: Path) -> None:
    bad = [n for n in _imports(path) if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)]
    assert bad == []
