"""The store package's public names, and that importing it loads no implementation (the
local store loads on first use: no ``ingestq.store`` <-> ``ingestq.store.local`` cycle)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ingestq.store


def run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout


def test_importing_the_store_loads_no_implementation() -> None:
    out = run(
        "import sys, ingestq.store\n"
        "print(sorted(m for m in sys.modules if m.startswith('ingestq.store.local')))\n"
        "from ingestq.store import LocalStore\n"
        "print(LocalStore.__module__)\n"
    )
    assert out.splitlines() == ["[]", "ingestq.store.local.store"]


def test_the_local_store_imports_first_without_a_cycle() -> None:
    assert run("from ingestq.store.local import LocalStore; print(LocalStore.__name__)") == (
        "LocalStore\n"
    )


def test_public_names() -> None:
    for name in ingestq.store.__all__:
        assert getattr(ingestq.store, name) is not None
    from ingestq.store import (  # noqa: F401
        Descriptor,
        Digest,
        ImageIndex,
        LocalStore,
        read_blob,
        write_blob,
    )

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        ingestq.store.Nope  # type: ignore[attr-defined]  # noqa: B018
