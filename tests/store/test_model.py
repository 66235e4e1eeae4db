"""Property-based test: LocalStore against a simple in-memory model (hypothesis stateful).

The model knows committed blobs (bytes, labels), ingests (bytes so far, total) and which
refs have an open writer. Every step applies one operation to both and compares results
and error kinds; invariants compare the whole visible state after each step.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, Info, LocalStore
from ingestq.store.local import LocalWriter

REFS = st.sampled_from(["r1", "r2", "layer-sha256:x"])
CHUNKS = st.sampled_from([b"", b"a", b"bb", b"ccc", b"\x00" * 7, b"xyz" * 50])
LABEL_KEYS = st.sampled_from(["a", "b", "containerd.io/gc.root"])
LABEL_VALUES = st.sampled_from(["", "1", "two"])


@dataclass
class IngestModel:
    data: bytearray = field(default_factory=bytearray)
    total: int = 0


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="store-model-")
        self.store = LocalStore(self.tmp, fsync=False)
        self.blobs: dict[Digest, tuple[bytes, dict[str, str]]] = {}
        self.ingests: dict[str, IngestModel] = {}
        self.writers: dict[str, LocalWriter] = {}

    def teardown(self) -> None:
        for w in self.writers.values():
            w.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # writers -----------------------------------------------------------------------
    @rule(ref=REFS, size=st.sampled_from([0, 0, 3, 150]), which=st.integers(0, 3))
    def open_writer(self, ref: str, size: int, which: int) -> None:
        expected = None
        if which == 1 and self.blobs:  # expect content that is committed
            d = sorted(self.blobs)[0]
            expected = Descriptor(d, size)
        elif which == 2:  # expect content that may not exist
            expected = Descriptor(Digest.from_bytes(b"not yet" + ref.encode()), size)
        if expected is not None and expected.digest in self.blobs:
            # Even with a wrong size: the blob is re-hashed, found intact, and trusted.
            self._expect(errdefs.AlreadyExists, self.store.writer, ref, expected)
            return
        if ref in self.writers:
            self._expect(errdefs.Unavailable, self.store.writer, ref, expected)
            return
        model = self.ingests.get(ref)
        total = size if expected is not None else 0
        if model is not None and total and model.total and total != model.total:
            self._expect(errdefs.FailedPrecondition, self.store.writer, ref, expected)
            return
        w = self.store.writer(ref, expected)
        if model is None:
            model = self.ingests[ref] = IngestModel()
        if total and not model.total:
            model.total = total
        assert w.status().offset == len(model.data)
        assert w.status().total == model.total
        assert w.digest() == Digest.from_bytes(bytes(model.data))
        self.writers[ref] = w

    @precondition(lambda self: self.writers)
    @rule(data=st.data(), chunk=CHUNKS)
    def write(self, data: st.DataObject, chunk: bytes) -> None:
        ref = data.draw(st.sampled_from(sorted(self.writers)))
        assert self.writers[ref].write(chunk) == len(chunk)
        self.ingests[ref].data += chunk

    @precondition(lambda self: self.writers)
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        ref = data.draw(st.sampled_from(sorted(self.writers)))
        self.writers[ref].truncate(0)
        self.ingests[ref].data.clear()

    @precondition(lambda self: self.writers)
    @rule(data=st.data(), crash=st.booleans())
    def close(self, data: st.DataObject, crash: bool) -> None:
        ref = data.draw(st.sampled_from(sorted(self.writers)))
        w = self.writers.pop(ref)
        if crash:  # what SIGKILL leaves: an unsealed file and a free lock
            assert w._fd is not None
            os.close(w._fd)
            w._fd = None
            w.lease.release()
        else:
            w.close()

    @precondition(lambda self: self.writers)
    @rule(
        data=st.data(),
        mode=st.sampled_from(["right", "unknown", "wrong-size", "wrong-digest"]),
        key=LABEL_KEYS,
        value=LABEL_VALUES,
    )
    def commit(self, data: st.DataObject, mode: str, key: str, value: str) -> None:
        ref = data.draw(st.sampled_from(sorted(self.writers)))
        w = self.writers.pop(ref)
        content = bytes(self.ingests[ref].data)
        digest = Digest.from_bytes(content)
        labels = {key: value}
        if mode == "wrong-size":
            self._expect(errdefs.FailedPrecondition, w.commit, len(content) + 1, digest)
            return
        if mode == "wrong-digest":
            wrong = Digest.from_bytes(content + b"!")
            self._expect(errdefs.FailedPrecondition, w.commit, len(content), wrong)
            return
        size, expected = (len(content), digest) if mode == "right" else (0, None)
        del self.ingests[ref]
        if digest in self.blobs:
            self._expect(errdefs.AlreadyExists, w.commit, size, expected, labels)
            return
        info = w.commit(size, expected, labels)
        kept = {k: v for k, v in labels.items() if v}
        assert (info.digest, info.size, dict(info.labels)) == (digest, len(content), kept)
        self.blobs[digest] = (content, kept)

    # ingest management -------------------------------------------------------------
    @rule(ref=REFS)
    def abort(self, ref: str) -> None:
        if ref in self.writers:
            self._expect(errdefs.Unavailable, self.store.abort, ref)
        elif ref in self.ingests:
            self.store.abort(ref)
            del self.ingests[ref]
        else:
            self._expect(errdefs.NotFound, self.store.abort, ref)

    # content management ------------------------------------------------------------
    @rule(data=st.data(), present=st.booleans())
    def delete(self, data: st.DataObject, present: bool) -> None:
        if present and self.blobs:
            d = data.draw(st.sampled_from(sorted(self.blobs)))
            self.store.delete(d)
            del self.blobs[d]
        else:
            d = Digest.from_bytes(b"never committed")
            self._expect(errdefs.NotFound, self.store.delete, d)

    @precondition(lambda self: self.blobs)
    @rule(data=st.data(), key=LABEL_KEYS, value=LABEL_VALUES, whole=st.booleans())
    def update_labels(self, data: st.DataObject, key: str, value: str, whole: bool) -> None:
        d = data.draw(st.sampled_from(sorted(self.blobs)))
        content, labels = self.blobs[d]
        old = self.store.info(d)
        new = Info(d, 0, old.created_at, old.updated_at, {key: value})
        if whole:
            got = self.store.update(new, "labels")
            labels = {key: value} if value else {}
        else:
            got = self.store.update(new, f"labels.{key}")
            labels = dict(labels)
            if value:
                labels[key] = value
            else:
                labels.pop(key, None)
        assert dict(got.labels) == labels
        self.blobs[d] = (content, labels)

    # invariants --------------------------------------------------------------------
    @invariant()
    def ingests_match(self) -> None:
        listed = {s.ref: s for s in self.store.list_statuses()}
        assert set(listed) == set(self.ingests)
        for ref, model in self.ingests.items():
            st_ = listed[ref]
            assert st_.offset == len(model.data)
            assert st_.total == model.total
            assert (st_.holder is not None) == (ref in self.writers)

    @invariant()
    def blobs_match(self) -> None:
        infos = {i.digest: i for i in self.store.walk()}
        assert set(infos) == set(self.blobs)
        for d, (content, labels) in self.blobs.items():
            assert infos[d].size == len(content)
            assert dict(infos[d].labels) == labels
            with self.store.reader_at(d) as ra:
                assert ra.read_at(0, ra.size) == content

    def _expect(self, kind: type[errdefs.ErrdefsError], fn: object, *args: object) -> None:
        assert callable(fn)
        try:
            fn(*args)
        except kind:
            return
        raise AssertionError(f"{fn} did not raise {kind.__name__}")


StoreMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreModel = StoreMachine.TestCase
