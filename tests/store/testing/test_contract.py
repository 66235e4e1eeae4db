"""The contract's capability declarations (store.testing.contract): a store that lacks a
capability does not get the tests that need it (they are not generated, not skipped),
and unknown capabilities are refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ingestq.store.testing.contract import (
    ALL_CAPABILITIES,
    HOLDER,
    KNOWN_CAPABILITIES,
    PUT,
    StoreContract,
    requires,
)


def _tests(cls: type) -> set[str]:
    return {n for n in dir(cls) if n.startswith("test_") and callable(getattr(cls, n))}


def test_a_store_without_capabilities_gets_only_the_containerd_tests() -> None:
    class Bare(StoreContract):
        capabilities = frozenset()

    class NoHolder(StoreContract):
        capabilities = ALL_CAPABILITIES - {HOLDER}

    full, bare, no_holder = _tests(StoreContract), _tests(Bare), _tests(NoHolder)
    extensions = {n for n in full if getattr(getattr(StoreContract, n), "__contract_requires__", 0)}
    assert bare == full - extensions
    needed = (getattr(StoreContract, n).__contract_requires__ for n in extensions)
    assert frozenset().union(*needed) == KNOWN_CAPABILITIES  # a test per capability at least
    needs_put = {n for n in extensions if PUT in getattr(StoreContract, n).__contract_requires__}
    assert needs_put  # not in ALL_CAPABILITIES: a store lists it
    assert no_holder == full - {"test_status_names_the_holder"} - needs_put
    assert Bare.test_status_names_the_holder is None


def test_unknown_capabilities_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown capabilities"):
        requires("teleport")
    with pytest.raises(TypeError, match="unknown capabilities"):

        class Typo(StoreContract):
            capabilities = frozenset({"holders"})


def test_the_testing_package_imports_without_pytest() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "from ingestq.store.testing import FakeRefLocker\n"
        "from ingestq.store.memory import MemoryStore\n"
        "MemoryStore(FakeRefLocker()).writer('r').close()\n"
        "try:\n"
        "    import ingestq.store.testing.contract\n"
        "except ImportError:\n"
        "    print('contract needs pytest')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "contract needs pytest\n"
