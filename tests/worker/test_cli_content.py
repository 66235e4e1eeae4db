"""``ingestq content``: every subcommand through click's runner, and the real console
script in subprocesses (stdin from a pipe, a file-size limit, a locked ref); exit
codes per error kind."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import pytest
from click.testing import CliRunner, Result

from ingestq import errdefs
from ingestq.store import Descriptor, Digest, LocalStore
from ingestq.worker.cli import cli
from ingestq.worker.cli.common import EXIT_CODES
from ingestq.worker.cli.content import human_duration, human_size

INGESTQ = Path(sys.executable).with_name("ingestq")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()  # read-only commands need an existing root
    return root


class Invoke(Protocol):
    def __call__(self, *args: str, input: bytes | None = None) -> Result: ...


@pytest.fixture
def run(root: Path) -> Invoke:
    runner = CliRunner()

    def invoke(*args: str, input: bytes | None = None) -> Result:
        return runner.invoke(cli, ["content", *args, "--root", str(root)], input=input)

    return invoke


def sha(data: bytes) -> str:
    return str(Digest.from_bytes(data))


def code(kind: str) -> int:
    return EXIT_CODES[kind]


def write_file(tmp_path: Path, data: bytes, name: str = "blob") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


# ingest ------------------------------------------------------------------------------
def test_ingest_a_file_then_again_silently(run: Invoke, tmp_path: Path, root: Path) -> None:
    data = os.urandom(300_000)
    f = write_file(tmp_path, data)
    r = run("ingest", str(f), "--ref", "one", "--label", "a=1", "--label", "flag")
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{sha(data)} {len(data)}\n"
    info = LocalStore(root).info(sha(data))
    assert dict(info.labels) == {"a": "1", "flag": "true"}
    again = run("ingest", str(f), "--ref", "two", "--expected-digest", sha(data))
    assert (again.exit_code, again.stdout, again.stderr) == (0, "", "")
    without_digest = run("ingest", str(f), "--ref", "three")
    assert (without_digest.exit_code, without_digest.stdout) == (0, "")
    assert LocalStore(root).list_statuses() == []


def test_ingest_json_reports_whether_it_existed(run: Invoke, tmp_path: Path) -> None:
    f = write_file(tmp_path, b"json content")
    first = json.loads(run("ingest", str(f), "--ref", "j", "--json").stdout)
    assert (first["digest"], first["size"], first["existed"]) == (sha(b"json content"), 12, False)
    second = json.loads(run("ingest", str(f), "--ref", "j2", "--json").stdout)
    assert second["existed"] is True
    assert second["digest"] == first["digest"]


def test_ingest_from_stdin(run: Invoke) -> None:
    r = run("ingest", "-", "--ref", "stdin", input=b"from stdin")
    assert r.exit_code == 0
    assert r.stdout.split() == [sha(b"from stdin"), "10"]


def test_ingest_resumes_an_unfinished_ingest_from_stdin(run: Invoke, root: Path) -> None:
    data = os.urandom(2_000_000)
    w = LocalStore(root).writer("resume")
    w.write(data[:700_000])
    w.close()
    r = run("ingest", "-", "--ref", "resume", "--expected-size", str(len(data)), input=data)
    assert r.exit_code == 0, r.output
    assert LocalStore(root).info(sha(data)).size == len(data)


@pytest.mark.parametrize(
    ("args", "kind", "message"),
    [
        (["--expected-digest", sha(b"other")], "FailedPrecondition", "unexpected commit digest"),
        (["--expected-digest", "sha256:nope"], "InvalidArgument", "invalid checksum digest"),
        (["--expected-size", "5"], "FailedPrecondition", "longer than the expected 5 bytes"),
        (["--expected-size", "500"], "DataLoss", "got 13 of 500"),
        (["--expected-size", "-1"], "InvalidArgument", "negative"),
        (["--label", "=v"], "InvalidArgument", "has no key"),
        (["--label", "k=" + "v" * 5000], "InvalidArgument", "greater than maximum size"),
    ],
)
def test_ingest_errors_exit_with_their_kind(
    run: Invoke, tmp_path: Path, args: list[str], kind: str, message: str
) -> None:
    f = write_file(tmp_path, b"thirteen byte")
    r = run("ingest", str(f), "--ref", "bad", *args)
    assert r.exit_code == code(kind), r.output
    assert r.stderr.startswith(f"ingestq: {kind}: ")
    assert message in r.stderr


def test_a_failed_ingest_stays_active_and_can_be_aborted(run: Invoke, tmp_path: Path) -> None:
    f = write_file(tmp_path, b"keep me")
    r = run("ingest", str(f), "--ref", "kept", "--expected-digest", sha(b"not this"))
    assert r.exit_code == code("FailedPrecondition")
    active = run("active", "--json")
    assert [(s["ref"], s["offset"], s["holder"]) for s in json.loads(active.stdout)] == [
        ("kept", 7, None)
    ]
    assert run("abort", "kept").exit_code == 0
    assert json.loads(run("active", "--json").stdout) == []


def test_missing_input_file_is_not_found(run: Invoke, tmp_path: Path) -> None:
    r = run("ingest", str(tmp_path / "absent"), "--ref", "x")
    assert r.exit_code == code("NotFound")
    assert "open " in r.stderr


def test_ingest_of_a_locked_ref_times_out_unavailable(
    run: Invoke, root: Path, tmp_path: Path
) -> None:
    f = write_file(tmp_path, b"locked")
    with LocalStore(root).writer("busy"):
        r = run("ingest", str(f), "--ref", "busy", "--timeout", "0.05")
    assert r.exit_code == code("Unavailable")
    assert "ingestq: Unavailable: ref busy locked for " in r.stderr


def test_json_errors_are_error_records(run: Invoke) -> None:
    r = run("info", sha(b"absent"), "--json")
    assert r.exit_code == code("NotFound")
    record = json.loads(r.stderr)["error"]
    assert (record["kind"], record["code"]) == ("NotFound", 5)
    assert record["message"] == f"content {sha(b'absent')}: not found"


# info / get / ls ---------------------------------------------------------------------
def ingest(root: Path, data: bytes, ref: str, **labels: str) -> None:
    store = LocalStore(root)
    with store.writer(ref, Descriptor(Digest.from_bytes(data), len(data))) as w:
        w.write(data)
        w.commit(len(data), Digest.from_bytes(data), labels)


def test_info(run: Invoke, root: Path) -> None:
    ingest(root, b"info me", "i", k="v")
    r = run("info", sha(b"info me"))
    assert r.exit_code == 0
    lines = dict(line.split(":", 1) for line in r.stdout.splitlines())
    assert lines["digest"].strip() == sha(b"info me")
    assert lines["size"].strip() == "7"
    assert lines["labels"].strip() == "k=v"
    j = json.loads(run("info", sha(b"info me"), "--json").stdout)
    assert (j["size"], j["labels"]) == (7, {"k": "v"})
    assert run("info", "sha256:zz").exit_code == code("InvalidArgument")


def test_get_streams_the_bytes(run: Invoke, root: Path) -> None:
    data = os.urandom(3_000_000)
    ingest(root, data, "g")
    r = run("get", sha(data))
    assert r.exit_code == 0
    assert r.stdout_bytes == data
    assert run("get", sha(b"absent")).exit_code == code("NotFound")


def test_get_of_tampered_content_is_data_loss(run: Invoke, root: Path) -> None:
    ingest(root, b"original", "t")
    blob = LocalStore(root).blob_path(sha(b"original"))
    blob.chmod(0o644)
    blob.write_bytes(b"tampered")
    r = run("get", sha(b"original"))
    assert r.exit_code == code("DataLoss")
    assert "does not match its digest" in r.stderr


def test_ls(run: Invoke, root: Path) -> None:
    ingest(root, b"a" * 1500, "a", kind="layer")
    ingest(root, b"b", "b")
    r = run("ls")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["DIGEST", "SIZE", "AGE", "LABELS"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {sha(b"a" * 1500), sha(b"b")}
    assert rows[sha(b"a" * 1500)].split()[1] == "1.5kB"
    assert rows[sha(b"a" * 1500)].endswith("kind=layer")
    assert rows[sha(b"b")].endswith(" -")
    assert "second" in rows[sha(b"b")]
    assert run("ls", "-q", "labels.kind==layer").stdout == sha(b"a" * 1500) + "\n"
    as_json = json.loads(run("ls", "--json", "labels.kind", f"digest=={sha(b'b')}").stdout)
    assert {i["digest"] for i in as_json} == {sha(b"a" * 1500), sha(b"b")}
    bad = run("ls", "labels.kind==")
    assert bad.exit_code == code("InvalidArgument")
    assert "filters: parse error" in bad.stderr


# rm / label --------------------------------------------------------------------------
def test_rm(run: Invoke, root: Path) -> None:
    ingest(root, b"one", "1")
    ingest(root, b"two", "2")
    r = run("rm", sha(b"one"), sha(b"never"), "sha256:bad", sha(b"two"))
    assert r.exit_code == code("InvalidArgument")
    assert r.stdout.split() == [sha(b"one"), sha(b"two")]  # the unknown one is skipped
    assert "unable to delete sha256:bad" in r.stderr
    assert list(LocalStore(root).walk()) == []
    assert run("rm", sha(b"never")).exit_code == 0


def test_rm_reports_each_error_once(run: Invoke) -> None:
    r = run("rm", "sha256:bad")
    assert r.exit_code == code("InvalidArgument")
    assert r.stderr.count("unable to delete sha256:bad") == 1
    assert len(r.stderr.strip().splitlines()) == 1


def test_label(run: Invoke, root: Path) -> None:
    ingest(root, b"labelled", "l", a="1", b="2")
    d = sha(b"labelled")
    r = run("label", d, "c=3", "b=", "flag")
    assert (r.exit_code, r.stdout) == (0, "a=1,c=3,flag=true\n")
    assert run("label", d).stdout == "a=1,c=3,flag=true\n"
    assert json.loads(run("label", d, "--json").stdout) == {"a": "1", "c": "3", "flag": "true"}
    assert run("label", sha(b"absent"), "x=1").exit_code == code("NotFound")
    assert run("label", d, "k=" + "v" * 4096).exit_code == code("InvalidArgument")


# active / abort ----------------------------------------------------------------------
def test_active_shows_offset_age_and_holder(run: Invoke, root: Path) -> None:
    store = LocalStore(root)
    idle = store.writer("layer-idle")
    idle.write(b"x" * 2000)
    idle.close()
    with store.writer("layer-busy") as w:
        w.write(b"y" * 10)
        r = run("active")
        rows = [line.split() for line in r.stdout.splitlines()]
        assert rows[0] == ["REF", "SIZE", "AGE", "HOLDER"]
        by_ref = {row[0]: row for row in rows[1:]}
        assert by_ref["layer-idle"][1] == "2kB" and by_ref["layer-idle"][-1] == "-"
        assert by_ref["layer-busy"][1] == "10B"
        assert by_ref["layer-busy"][-1].endswith(f":{os.getpid()}")
        j = json.loads(run("active", "ref~=busy", "--json").stdout)
        assert [s["ref"] for s in j] == ["layer-busy"]
        assert j[0]["holder"]["pid"] == os.getpid()
        held = run("abort", "layer-busy")
        assert held.exit_code == code("Unavailable")
    assert run("abort", "layer-idle").exit_code == 0
    assert run("abort", "layer-idle").exit_code == code("NotFound")
    assert run("active", "ref==").exit_code == code("InvalidArgument")


# the real console script -------------------------------------------------------------
def ingestq(root: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "INGESTQ_ROOT": str(root)}
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        [str(INGESTQ), "content", *args], env=env, capture_output=True, timeout=60, **kw
    )


@pytest.mark.slow
def test_console_script_stdin_pipe_and_get(root: Path) -> None:
    data = os.urandom(1_500_000)
    done = ingestq(root, "ingest", "-", "--ref", "piped", input=data)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == [sha(data), str(len(data))]
    again = ingestq(root, "ingest", "-", "--ref", "piped-again", input=data)
    assert (again.returncode, again.stdout) == (0, b"")
    got = ingestq(root, "get", sha(data))
    assert (got.returncode, got.stdout) == (0, data)
    missing = ingestq(root, "info", sha(b"absent"))
    assert missing.returncode == code("NotFound")
    assert missing.stderr.decode() == f"ingestq: NotFound: content {sha(b'absent')}: not found\n"


@pytest.mark.slow
def test_console_script_file_size_limit_is_resource_exhausted_and_resumes(
    root: Path, tmp_path: Path
) -> None:
    data = os.urandom(3 << 20)
    f = write_file(tmp_path, data)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    limited = ingestq(root, "ingest", str(f), "--ref", "big", preexec_fn=limit)
    assert limited.returncode == code("ResourceExhausted"), limited.stderr
    assert b"ingestq: ResourceExhausted: write big at offset" in limited.stderr
    assert LocalStore(root).status("big").offset == 1 << 20
    resumed = ingestq(root, "ingest", str(f), "--ref", "big", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["digest"] == sha(data)


def test_console_script_waits_for_a_locked_ref(root: Path, tmp_path: Path) -> None:
    data = b"wait for me"
    f = write_file(tmp_path, data)
    store = LocalStore(root)
    w = store.writer("contended", Descriptor(Digest.from_bytes(data), len(data)))
    w.write(data)
    argv = [str(INGESTQ), "content", "ingest", str(f), "--ref", "contended"]
    proc = subprocess.Popen(
        [*argv, "--expected-digest", sha(data), "--json"],
        env={**os.environ, "INGESTQ_ROOT": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline().decode()  # blocks until the CLI has hit the lock
    assert first.startswith("ingestq: waiting: ref contended locked for ")
    w.commit(len(data), Digest.from_bytes(data))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out)["existed"] is True


# exit codes and formatting ----------------------------------------------------------
def test_exit_codes_are_distinct_per_kind() -> None:
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)
    assert set(EXIT_CODES) == set(errdefs.KINDS)
    assert not {0, 1, 2} & set(EXIT_CODES.values())


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0B"), (999, "999B"), (1000, "1kB"), (1500, "1.5kB"), (1_048_576, "1.049MB")],
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (61, "About a minute"),
        (600, "10 minutes"),
        (3600, "About an hour"),
        (5 * 3600, "5 hours"),
        (3 * 86400, "3 days"),
        (20 * 86400, "2 weeks"),
        (90 * 86400, "3 months"),
        (800 * 86400, "2 years"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text
