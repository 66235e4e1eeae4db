"""ingestq's test suite (a package, so ``tests.servers`` is importable)."""
