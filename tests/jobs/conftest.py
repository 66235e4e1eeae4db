"""Fixtures of the job tests: a store root, shared with
the queue tests (tests/tasks/conftest.py)."""

from tests.tasks.conftest import store_root as store_root
