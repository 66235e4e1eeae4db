"""Testing helpers that ship with the store, so code built on the store protocols (and
other implementations of them) can be tested the way ingestq tests itself.

* :class:`FakeRefLocker`: an in-memory ref locker with controls for lock contention.
* :class:`ingestq.store.memory.MemoryStore`: an in-memory store with the local store's
  semantics.
* :mod:`ingestq.store.testing.contract`: the contract suite every store implementation
  owes (containerd's ``content/testsuite`` is the model). It needs pytest, so it is not
  imported here; this package imports without pytest.
* :mod:`ingestq.store.testing.leases_contract`: the contract every lease store
  (:class:`ingestq.store.leases.Leases`) owes; it needs pytest too.
"""

from ingestq.store.testing.fakes import FakeRefLocker

__all__ = ["FakeRefLocker"]
