"""Fixtures of the job tests: the misbehaving blob server and a store root, shared with
the queue tests (tests/tasks/conftest.py)."""

from tests.tasks.conftest import blob_server as blob_server
from tests.tasks.conftest import store_root as store_root
