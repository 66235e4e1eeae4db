"""The source contract: what every :class:`~ingestq.fetch.source.Source` owes the ingest
core, as a pytest suite that ships with the package.

Modelled on containerd's ``content/testsuite`` and structlog's ``testing`` helpers: the
suite is importable from the product, so any source (ingestq's own, or one another
package registers with :func:`ingestq.fetch.specs.register`) is checked the same way.
It checks, through the protocol only:

* opening at 0 yields exactly the bytes, in reads of at most ``n`` bytes (everything
  for ``n < 0``), with ``b""`` only at the end, and the total size when it is known;
* opening at an offset continues there or restarts at 0 (never anywhere else), and
  always reports the *whole* size; at the end it is empty or restarts, past the end
  it restarts;
* a missing resource is NotFound, an errdefs kind;
* for :class:`~ingestq.fetch.source.Validated` sources
  (:class:`ValidatedSourceContract`): the validator names the bytes opened, a
  matching ``if_range`` resumes, a stale one or changed bytes restart at 0, and no
  ``if_range`` resumes unguarded.

How a source plugs in: subclass :class:`SourceContract` (or
:class:`ValidatedSourceContract`) in a ``test_*.py`` module and provide a
``source_factory`` fixture that yields a :class:`SourceFactory`::

    class TestMySourceContract(SourceContract):
        @pytest.fixture
        def source_factory(self, tmp_path: Path) -> Iterator[SourceFactory]:
            factory = MyFactory(tmp_path)
            yield factory
            factory.close()

Class attributes tune what is demanded: :attr:`SourceContract.resumes` (opening inside
the resource continues there) and :attr:`SourceContract.reports_size`.

This module imports pytest, a test dependency of ingestq, not a runtime one: import it
from tests only.
"""

from __future__ import annotations

import random
from typing import Protocol, cast

import pytest

from ingestq import errdefs
from ingestq.fetch.source import Opened, Source, Validated

#: Sizes every test of whole reads runs with: empty, one byte, and more than a MiB
#: (several reads of any transport).
SIZES = (0, 1, (1 << 20) + 4099)
#: The size of the resource the offset tests open.
RESUME_SIZE = 300_000


def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


class SourceFactory(Protocol):
    """Makes sources of known content for the contract."""

    def source(self, data: bytes) -> Source:
        """A new source whose resource holds exactly ``data``."""
        ...

    def missing(self) -> Source:
        """A source whose resource does not exist."""
        ...

    def replace(self, source: Source, data: bytes) -> None:
        """Make the resource behind ``source`` hold ``data`` instead (only called by
        :class:`ValidatedSourceContract`; content-addressed sources may raise
        NotImplementedError)."""
        ...


def read_all(opened: Opened, n: int = 65536) -> bytes:
    """Read ``opened`` to its end in reads of at most ``n`` bytes, checking each read's
    length, then close it."""
    parts: list[bytes] = []
    try:
        while piece := opened.stream.read(n):
            assert 1 <= len(piece) <= n, f"read({n}) returned {len(piece)} bytes"
            parts.append(piece)
        assert opened.stream.read(n) == b"", "a read after the end returned bytes"
    finally:
        opened.stream.close()
    return b"".join(parts)


class SourceContract:
    """The contract tests. Subclasses provide ``source_factory`` (see the module doc)."""

    #: True when opening inside the resource must continue there (start == offset);
    #: False allows a restart at 0.
    resumes: bool = True
    #: True when :attr:`Opened.size` must be known (else it may be None).
    reports_size: bool = True
    #: Whether the source implements :class:`~ingestq.fetch.source.Validated` (the
    #: ingest core looks for ``if_range``); :class:`ValidatedSourceContract` sets it.
    validated: bool = False

    @pytest.fixture
    def source_factory(self) -> SourceFactory:
        """Overridden by every subclass."""
        raise NotImplementedError("provide a source_factory fixture")

    def _check_size(self, opened: Opened, size: int) -> None:
        if self.reports_size:
            assert opened.size == size, f"size {opened.size}, expected {size}"
        else:
            assert opened.size in (None, size), f"size {opened.size}, expected {size}"

    def test_the_name_is_a_stable_nonempty_string(self, source_factory: SourceFactory) -> None:
        source = source_factory.source(blob(10))
        assert isinstance(source.name, str) and source.name
        read_all(source.open())
        assert source.name == source.name

    @pytest.mark.parametrize("size", SIZES)
    def test_open_at_zero_yields_the_exact_bytes(
        self, source_factory: SourceFactory, size: int
    ) -> None:
        data = blob(size, seed=size)
        opened = source_factory.source(data).open()
        assert opened.start == 0
        self._check_size(opened, size)
        assert read_all(opened) == data

    def test_reads_of_every_length_concatenate_to_the_bytes(
        self, source_factory: SourceFactory
    ) -> None:
        data = blob(RESUME_SIZE, seed=1)
        opened = source_factory.source(data).open()
        got = b""
        try:
            for n in (1, 2, 7, 1000, 65536):
                piece = opened.stream.read(n)
                assert 1 <= len(piece) <= n
                got += piece
            got += opened.stream.read(-1)
            assert opened.stream.read(-1) == b"" and opened.stream.read(10) == b""
        finally:
            opened.stream.close()
        assert got == data

    def test_a_source_opens_again_from_the_start(self, source_factory: SourceFactory) -> None:
        data = blob(5000, seed=2)
        source = source_factory.source(data)
        first = source.open()
        assert first.stream.read(10) == data[:10]
        first.stream.close()
        assert read_all(source.open()) == data

    def test_close_is_idempotent_and_allowed_before_the_end(
        self, source_factory: SourceFactory
    ) -> None:
        source = source_factory.source(blob(RESUME_SIZE, seed=3))
        opened = source.open()
        opened.stream.read(100)
        opened.stream.close()
        opened.stream.close()
        opened = source.open()
        opened.stream.close()

    @pytest.mark.parametrize("where", ["first", "middle", "last"])
    def test_open_at_an_offset_continues_there_or_restarts_at_zero(
        self, source_factory: SourceFactory, where: str
    ) -> None:
        data = blob(RESUME_SIZE, seed=4)
        offset = {"first": 1, "middle": RESUME_SIZE // 2, "last": RESUME_SIZE - 1}[where]
        opened = source_factory.source(data).open(offset)
        if self.resumes:
            assert opened.start == offset, f"opened at {opened.start}, asked for {offset}"
        else:
            assert opened.start in (0, offset)
        self._check_size(opened, RESUME_SIZE)
        assert read_all(opened) == data[opened.start :]

    def test_open_at_the_end_is_empty_there_or_restarts(
        self, source_factory: SourceFactory
    ) -> None:
        data = blob(RESUME_SIZE, seed=5)
        opened = source_factory.source(data).open(RESUME_SIZE)
        assert opened.start in (0, RESUME_SIZE)
        self._check_size(opened, RESUME_SIZE)
        assert read_all(opened) == data[opened.start :]

    def test_open_past_the_end_restarts_at_zero(self, source_factory: SourceFactory) -> None:
        data = blob(RESUME_SIZE, seed=6)
        opened = source_factory.source(data).open(RESUME_SIZE + 10)
        assert opened.start == 0
        self._check_size(opened, RESUME_SIZE)
        assert read_all(opened) == data

    def test_a_missing_resource_is_not_found(self, source_factory: SourceFactory) -> None:
        source = source_factory.missing()
        with pytest.raises(errdefs.NotFound) as caught:
            read_all(source.open())
        assert isinstance(caught.value, errdefs.ErrdefsError) and str(caught.value)
        with pytest.raises(errdefs.NotFound):
            read_all(source.open(10))

    def test_validated_exactly_as_declared(self, source_factory: SourceFactory) -> None:
        source = source_factory.source(blob(10))
        assert hasattr(source, "if_range") == self.validated
        assert hasattr(source, "validator") == self.validated


class ValidatedSourceContract(SourceContract):
    """The contract of :class:`~ingestq.fetch.source.Validated` sources, on top of
    :class:`SourceContract`; the factory's ``replace`` must work."""

    validated = True

    @staticmethod
    def _validated(source: Source) -> Validated:
        assert hasattr(source, "if_range") and hasattr(source, "validator")
        return cast(Validated, source)

    def _validator(self, source: Source) -> str | None:
        value = self._validated(source).validator
        assert value is None or isinstance(value, str)
        return value

    def _first_open(self, source: Source) -> str:
        read_all(source.open())
        validator = self._validator(source)
        assert validator, "no validator after an open at 0"
        return validator

    def test_the_validator_names_the_bytes_opened(self, source_factory: SourceFactory) -> None:
        source = source_factory.source(blob(RESUME_SIZE, seed=7))
        first = self._first_open(source)
        assert self._first_open(source) == first
        source_factory.replace(source, blob(RESUME_SIZE + 1, seed=8))
        assert self._first_open(source) != first

    def test_a_matching_if_range_resumes(self, source_factory: SourceFactory) -> None:
        data = blob(RESUME_SIZE, seed=9)
        source = source_factory.source(data)
        self._validated(source).if_range = self._first_open(source)
        opened = source.open(1000)
        assert opened.start == 1000
        assert read_all(opened) == data[1000:]

    def test_a_stale_if_range_restarts_at_zero(self, source_factory: SourceFactory) -> None:
        data = blob(RESUME_SIZE, seed=10)
        source = source_factory.source(data)
        self._first_open(source)
        self._validated(source).if_range = '"stale-validator"'
        opened = source.open(1000)
        assert opened.start == 0
        assert read_all(opened) == data

    def test_changed_bytes_restart_a_resume_and_get_a_new_validator(
        self, source_factory: SourceFactory
    ) -> None:
        source = source_factory.source(blob(RESUME_SIZE, seed=11))
        recorded = self._first_open(source)
        changed = blob(RESUME_SIZE + 100, seed=12)
        source_factory.replace(source, changed)
        self._validated(source).if_range = recorded
        opened = source.open(1000)
        assert opened.start == 0, "a resume mixed two versions of the resource"
        self._check_size(opened, len(changed))
        assert read_all(opened) == changed
        assert self._validator(source) not in (None, recorded)

    def test_no_if_range_resumes_unguarded(self, source_factory: SourceFactory) -> None:
        data = blob(RESUME_SIZE, seed=13)
        source = source_factory.source(data)
        self._validated(source).if_range = None
        opened = source.open(500)
        assert opened.start == 500
        assert read_all(opened) == data[500:]


__all__ = [
    "RESUME_SIZE",
    "SIZES",
    "SourceContract",
    "SourceFactory",
    "ValidatedSourceContract",
    "blob",
    "read_all",
]
