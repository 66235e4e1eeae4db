"""The gRPC number boundary (errdefs/_grpc.py)."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from ingestq import errdefs

ROOT = Path(__file__).resolve().parents[2]
KINDS = list(errdefs.KINDS.values())
IDS = list(errdefs.KINDS)
MESSAGES = ["", "content sha256:ab", "a: b: c", "100% done", "x: not found", "ümlaut\nnewline"]


def test_errdefs_works_without_grpc_installed() -> None:
    script = (
        "import sys\n"
        "sys.modules['grpc'] = None  # any 'import grpc' now fails\n"
        "import errdefs\n"
        "assert str(errdefs.from_grpc(*errdefs.to_grpc(errdefs.NotFound('x')))) == 'x: not found'\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_by_code_maps_every_code_to_its_kind(cls: type[errdefs.ErrdefsError]) -> None:
    assert errdefs.by_code(cls.grpc_code) is cls


@pytest.mark.parametrize("code", [0, 17, -1, 99, 2**40])
def test_by_code_unmapped_is_unknown(code: int) -> None:
    assert errdefs.by_code(code) is errdefs.Unknown


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_to_grpc_sends_code_and_full_message(cls: type[errdefs.ErrdefsError]) -> None:
    err = cls("content sha256:ab")
    assert errdefs.to_grpc(err) == (cls.grpc_code, f"content sha256:ab: {cls.kind}")


def test_to_grpc_for_other_exceptions() -> None:
    assert errdefs.to_grpc(ValueError("boom")) == (2, "boom")
    assert errdefs.to_grpc(ValueError()) == (2, "")
    assert errdefs.to_grpc(FileNotFoundError(errno.ENOENT, "gone")) == (5, "[Errno 2] gone")
    wrapped = RuntimeError("fetch failed")
    wrapped.__cause__ = errdefs.Unavailable("ref locked")
    assert errdefs.to_grpc(wrapped) == (14, "fetch failed")


def test_from_grpc_exact_kind_text_gives_bare_error() -> None:
    err = errdefs.from_grpc(5, "not found")
    assert type(err) is errdefs.NotFound
    assert err.message == ""
    assert str(err) == "not found"


def test_from_grpc_keeps_message_with_suffix() -> None:
    err = errdefs.from_grpc(5, "content digest sha256:x: not found")
    assert type(err) is errdefs.NotFound
    assert str(err) == "content digest sha256:x: not found"


def test_from_grpc_appends_missing_suffix_like_containerd_1_6() -> None:
    assert str(errdefs.from_grpc(5, "blob missing")) == "blob missing: not found"
    assert str(errdefs.from_grpc(2, "boom")) == "boom: unknown"


def test_from_grpc_unmapped_code_is_unknown() -> None:
    err = errdefs.from_grpc(99, "odd")
    assert type(err) is errdefs.Unknown
    assert str(err) == "odd: unknown"


def test_from_grpc_rejects_ok() -> None:
    with pytest.raises(ValueError, match="OK"):
        errdefs.from_grpc(0, "fine")


@pytest.mark.parametrize("code", [True, 5.0, "5", None])
def test_from_grpc_rejects_non_int_codes(code: object) -> None:
    with pytest.raises(TypeError):
        errdefs.from_grpc(code, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
@pytest.mark.parametrize("message", MESSAGES)
def test_round_trip_through_grpc_numbers(cls: type[errdefs.ErrdefsError], message: str) -> None:
    err = cls(message)
    back = errdefs.from_grpc(*errdefs.to_grpc(err))
    assert type(back) is cls
    assert str(back) == str(err)


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_wrapped_error_round_trips(cls: type[errdefs.ErrdefsError]) -> None:
    err = errdefs.wrap(errdefs.wrap(cls("blob"), "commit"), "pull")
    back = errdefs.from_grpc(*errdefs.to_grpc(err))
    assert (type(back), str(back)) == (cls, str(err))
