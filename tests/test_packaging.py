"""The wheel as a user gets it: built from the files the Dockerfile copies, installed
without the test extras into a fresh venv, and used from an application directory whose
own ``tasks.py``, ``api/``, ``store/``, ``worker.py``, ``errdefs.py`` (and the other
layer names) raise when imported.

Checked there: the wheel holds exactly one top-level package (``ingestq``) and the
``ingestq`` console script; the installed dependencies are consistent (``pip check``);
``import ingestq.store`` loads neither Celery, gRPC nor Redis; the embedded producer
(``from ingestq import enqueue_ingest, get_job``) ingests a file and raises
``ingestq.errdefs.NotFound`` for a missing one; and the same through a real Redis with
``ingestq worker`` and, separately, ``celery -A ingestq.tasks.app worker``. Run by
root with ``--uid nobody``, a worker of a venv that user cannot read stops at once with
the reason, and one of a venv anyone can read (made by the system's Python) ingests as
``nobody``.

Building and installing take a minute (the package registry's files come from pip's
cache), so the whole module is ``slow``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from ingestq import errdefs
from ingestq.worker.cli.common import EXIT_CODES
from tests.servers.util import wait_until
from tests.tasks.workers import ping_app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]

#: Debian's Python (package python3-venv, which scripts/test installs): an interpreter
#: any user can run, where the test run's own may live under root's 0700 home.
SYSTEM_PYTHON = Path("/usr/bin/python3")

#: Top-level names an application commonly has and that ingestq's packages must never
#: be confused with; the first five are the ones of the issue.
APP_MODULES = (
    "tasks.py",
    "api/__init__.py",
    "store/__init__.py",
    "worker.py",
    "errdefs.py",
    "fetch.py",
    "ingest/__init__.py",
    "images.py",
    "jobs/__init__.py",
)

PRODUCER = """\
import json
import sys

import ingestq
import ingestq.errdefs
from ingestq import enqueue_ingest, get_job

path, missing, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
job = enqueue_ingest(path)
info = job.wait(timeout=timeout)
again = get_job(job.id)
out = {
    "ingestq": ingestq.__file__,
    "digest": str(info.digest),
    "size": info.size,
    "state": again.state.value,
    "again": str(again.wait(timeout=timeout).digest),
}
try:
    enqueue_ingest(missing).wait(timeout=timeout)
except ingestq.errdefs.NotFound as exc:
    out["missing"] = ["NotFound", str(exc)]
except Exception as exc:
    out["missing"] = [f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc)]
else:
    out["missing"] = None
print(json.dumps(out))
"""

IMPORTS_OF_STORE = """\
import json
import sys

import ingestq.store

print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


@dataclass(frozen=True)
class Installed:
    """The fresh venv with the wheel in it, and an application directory."""

    wheel: Path
    venv: Path
    app: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process of the application: no INGESTQ_* settings of the
        test run, no PYTHONPATH (nothing of the repository), the venv first on PATH."""
        drop = ("INGESTQ_", "PYTHON", "VIRTUAL_ENV", "CELERY_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"  # worker logs reach the file as they happen
        env.update(extra)
        return env

    def run(
        self, argv: Sequence[str | Path], env: Mapping[str, str], timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the application directory; fail with its output if it fails."""
        done = subprocess.run(
            [str(a) for a in argv], cwd=self.app, env=dict(env), capture_output=True,
            text=True, timeout=timeout, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"{shlex.join(map(str, argv))} exited {done.returncode}\n"
            f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
        )
        return done


def copy_like_the_dockerfile(dest: Path) -> None:
    """Copy what the Dockerfile's ``COPY`` lines copy (symlinks kept, as Docker does)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for line in (REPO / "Dockerfile").read_text().splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--") for w in words[1:]):
            continue
        *sources, target = words[1:]
        for source in sources:
            src = REPO / source
            if src.is_dir():
                # `COPY dir dest` copies the directory's contents into dest.
                shutil.copytree(src, dest / target, symlinks=True, ignore=ignore,
                                dirs_exist_ok=True)  # fmt: skip
            elif target.endswith("/") or len(sources) > 1:
                (dest / target).mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / target / src.name)
            else:
                shutil.copy2(src, dest / target)


def make_app_directory(app: Path) -> None:
    """An application with its own modules named like ingestq's packages; importing any
    of them is a bug in ingestq and fails loudly."""
    for name in APP_MODULES:
        path = app / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"raise ImportError('the application\\'s own {name} was imported')\n")
    (app / "producer.py").write_text(PRODUCER)
    (app / "imports_of_store.py").write_text(IMPORTS_OF_STORE)
    (app / "input").mkdir()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("packaging")
    src, wheels = base / "src", base / "wheels"
    copy_like_the_dockerfile(src)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-q", "-w", str(wheels), str(src)],
        check=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("ingestq-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", str(wheel)],
        check=True, timeout=600,
    )  # fmt: skip
    app = base / "app"
    app.mkdir()
    make_app_directory(app)
    return Installed(wheel, venv, app)


def test_the_wheel_installs_one_package_and_the_console_script(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = wheel.read(entry_points).decode()
    top = {name.split("/")[0] for name in names}
    assert top == {"ingestq", "ingestq-0.1.0.dist-info"}
    assert "ingestq = ingestq.worker.cli:main" in scripts
    # Every package folder the repository links under ingestq/ made it in (so the
    # Dockerfile copies them all), with its data files.
    packages = sorted(p.name for p in (REPO / "ingestq").iterdir() if p.is_symlink())
    missing = [p for p in packages if f"ingestq/{p}/__init__.py" not in names]
    assert not missing, f"packages not in the wheel (missing COPY line?): {missing}"
    for data in (
        "ingestq/py.typed",
        "ingestq/tasks/lua/acquire.lua",
        "ingestq/errdefs/record.proto",
    ):
        assert data in names
    assert (installed.venv / "bin" / "ingestq").is_file()
    helped = installed.run([installed.venv / "bin" / "ingestq", "--help"], installed.env())
    assert "worker" in helped.stdout


def test_the_install_has_its_dependencies_and_no_test_extras(installed: Installed) -> None:
    installed.run([installed.python, "-m", "pip", "check"], installed.env())
    probe = (
        "import importlib.util as u; print([m for m in ('pytest', 'hypothesis') if u.find_spec(m)])"
    )
    assert installed.run([installed.python, "-c", probe], installed.env()).stdout.strip() == "[]"


def test_importing_the_store_loads_no_celery_grpc_or_redis(installed: Installed) -> None:
    done = installed.run([installed.python, "imports_of_store.py"], installed.env())
    loaded = set(json.loads(done.stdout))
    assert "ingestq" in loaded
    assert not loaded & {"celery", "kombu", "billiard", "grpc", "redis"}, sorted(loaded)


def write_input(directory: Path, size: int = 300_000) -> tuple[Path, str]:
    path = directory / f"blob-{uuid.uuid4().hex[:8]}.bin"
    data = os.urandom(size)
    path.write_bytes(data)
    return path, "sha256:" + hashlib.sha256(data).hexdigest()


def check_producer(installed: Installed, env: Mapping[str, str]) -> None:
    """Run the producer script: digest, size, state, and NotFound for a missing file."""
    path, digest = write_input(installed.app / "input")
    missing = installed.app / "input" / "no-such-file.bin"
    done = installed.run([installed.python, "producer.py", path, missing, "120"], env)
    out = json.loads(done.stdout.splitlines()[-1])
    assert Path(out["ingestq"]).is_relative_to(installed.venv), out["ingestq"]
    assert out["digest"] == out["again"] == digest
    assert out["size"] == path.stat().st_size
    assert out["state"] == "succeeded"
    assert out["missing"] is not None and out["missing"][0] == "NotFound", out["missing"]
    assert str(missing) in out["missing"][1] or "not found" in out["missing"][1].lower()


def test_the_embedded_producer_ingests_a_file(installed: Installed, tmp_path: Path) -> None:
    """No Redis: the job runs in the producer's process (no file roots needed there)."""
    env = installed.env(INGESTQ_ROOT=str(tmp_path / "store"), INGESTQ_FSYNC="0")
    check_producer(installed, env)
    assert any((tmp_path / "store").rglob("*")), "nothing was written to INGESTQ_ROOT"


class WorkerProcess:
    """A worker of the fresh venv, started in the application directory."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path):
        self.argv = list(argv)
        self.log_path = log
        self._log: IO[bytes] = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.argv, cwd=cwd, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def exit_reason(self) -> str | None:
        if self.process.poll() is None:
            return None
        return f"{shlex.join(self.argv)} exited {self.process.returncode}:\n{self.log()}"

    def log(self, tail: int = 5000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Celery's warm shutdown; the worker is idle), SIGKILL after ``timeout``."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)
        finally:
            self._log.close()


@contextlib.contextmanager
def answering_worker(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path, redis_url: str
) -> Iterator[WorkerProcess]:
    """The worker ``argv`` (whose ``--hostname`` is its last argument), once it answers
    ping through ``redis_url``; stopped afterwards."""
    name = argv[-1]
    worker = WorkerProcess(argv, env, cwd, log)
    app = ping_app(redis_url)
    try:
        wait_until(
            lambda: app.control.ping(destination=[name], timeout=0.5),
            60,
            f"{name} answers ping",
            abort=worker.exit_reason,
        )
        yield worker
    finally:
        app.close()
        worker.stop()


def check_producer_beside(
    installed: Installed, env: Mapping[str, str], worker: WorkerProcess
) -> None:
    """:func:`check_producer`, failing with ``worker``'s log."""
    try:
        check_producer(installed, env)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- worker log:\n{worker.log()}") from None


@pytest.mark.parametrize(
    "command",
    [
        ["ingestq", "worker", "--concurrency", "1"],
        ["celery", "-A", "ingestq.tasks.app", "worker", "--concurrency", "1", "-l", "INFO"],
    ],
    ids=["ingestq-worker", "celery-worker"],
)
def test_a_queue_worker_ingests_for_the_producer(
    installed: Installed, redis_url: str, tmp_path: Path, command: list[str]
) -> None:
    """Through Redis: the worker (started from the application directory with the venv's
    own binary) ingests the producer's file, and a missing file is NotFound across it."""
    env = installed.env(
        INGESTQ_REDIS_URL=redis_url,
        INGESTQ_ROOT=str(tmp_path / "store"),
        INGESTQ_FILE_ROOTS=str(installed.app / "input"),
        INGESTQ_FSYNC="0",
    )
    name = f"{command[0]}-{uuid.uuid4().hex[:6]}@packaging"
    argv = [str(installed.venv / "bin" / command[0]), *command[1:], "--hostname", name]
    with answering_worker(argv, env, installed.app, tmp_path / "worker.log", redis_url) as worker:
        check_producer_beside(installed, env, worker)
    # This worker ran them (not some other process on the queue).
    log = worker.log(tail=1 << 20)
    assert re.search(r"Task ingestq\.ingest\[[-0-9a-f]+\] succeeded", log), log[-5000:]
    assert re.search(r"Task ingestq\.ingest\[[-0-9a-f]+\] raised .*NotFound", log), log[-5000:]


def test_a_worker_whose_user_cannot_read_the_install_stops_with_the_reason(
    installed: Installed, redis_url: str, tmp_path: Path
) -> None:
    """``ingestq worker --uid nobody`` of a venv under pytest's temporary directory (root's,
    0700): nobody could not import the worker after Celery's drop, so it does not start,
    promptly, with FailedPrecondition naming what that user cannot read, and no
    traceback."""
    base = tmp_path_root(tmp_path)
    assert base.stat().st_mode & 0o077 == 0, f"{base} is readable by others"
    env = installed.env(INGESTQ_REDIS_URL=redis_url, INGESTQ_ROOT=str(tmp_path / "store"))
    argv = [str(installed.venv / "bin" / "ingestq"), "worker", "--uid", "nobody"]
    done = subprocess.run(
        argv, cwd=installed.app, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == EXIT_CODES[errdefs.FailedPrecondition.name], done.stderr[-3000:]
    assert "the worker's user (user nobody" in done.stderr, done.stderr[-3000:]
    found = re.search(r"cannot read (/.+?) \(Permission denied\)", done.stderr)
    assert found, done.stderr[-3000:]
    # The venv, or the interpreter's own installation when that is root's too (a
    # pyenv Python under /root): either way, a path of what the worker runs.
    roots = (base, Path(os.path.realpath(sys.base_prefix)))
    assert any(Path(found[1]).is_relative_to(r) for r in roots), (found[1], roots)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "store").exists(), "the worker opened its store"


@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detach"])
def test_a_celery_worker_whose_user_cannot_read_the_install_stops_with_the_reason(
    installed: Installed, redis_url: str, detach: bool
) -> None:
    """``celery -A ingestq.tasks.app worker --uid nobody`` of the same unreadable venv:
    the app's worker option checks nobody while Celery reads its options, before it
    drops privileges (which would fail on Celery's own worker module), and before it
    detaches (whose parent would exit 0): the command fails, naming what nobody cannot
    read, with no traceback. The store is one nobody may use, so the venv is the only
    reason."""
    nobody = pwd.getpwnam("nobody")
    store = Path(tempfile.mkdtemp(prefix="ingestq-store-"))
    try:
        store.chmod(0o755)
        os.chown(store, nobody.pw_uid, nobody.pw_gid)
        env = installed.env(INGESTQ_REDIS_URL=redis_url, INGESTQ_ROOT=str(store))
        argv = [str(installed.venv / "bin" / "celery"), "-A", "ingestq.tasks.app", "worker",
                "--uid", "nobody", "--loglevel", "INFO"]  # fmt: skip
        if detach:
            argv += ["--detach", f"--logfile={store}/worker.log", f"--pidfile={store}/w.pid"]
        done = subprocess.run(
            argv, cwd=installed.app, env=env, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        assert done.returncode != 0, done.stderr[-3000:]
        assert (
            f"ingestq worker cannot start: the worker's user (user nobody, uid "
            f"{nobody.pw_uid}) cannot read " in done.stderr
        ), done.stderr[-3000:]
        found = re.search(r"cannot read (/.+?) \(Permission denied\)", done.stderr)
        assert found, done.stderr[-3000:]
        roots = (tmp_path_root(installed.venv), Path(os.path.realpath(sys.base_prefix)))
        assert any(Path(found[1]).is_relative_to(r) for r in roots), (found[1], roots)
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        assert "ready." not in done.stderr, "the worker started consuming"
        assert not list(store.iterdir()), "the worker opened its store"
    finally:
        shutil.rmtree(store)


def tmp_path_root(tmp_path: Path) -> Path:
    """pytest's base temporary directory, which holds every test's ``tmp_path``."""
    for parent in tmp_path.parents:
        if parent.name.startswith("pytest-of-"):
            return parent
    raise AssertionError(f"{tmp_path} is not under pytest's base temporary directory")


@pytest.fixture(scope="module")
def installed_for_anyone(installed: Installed) -> Iterator[Installed]:
    """The same wheel in a venv any user can read: made by :data:`SYSTEM_PYTHON` in a
    0755 directory outside pytest's temporary directories (root's, 0700)."""
    probe = "import sys, venv, ensurepip; print(sys.version_info >= (3, 11))"
    version = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", probe],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert version.stdout.strip() == "True", (
        f"{SYSTEM_PYTHON} (>= 3.11, with venv) is needed: apt-get install python3-venv\n"
        f"{version.stderr[-2000:]}"
    )
    base = Path(tempfile.mkdtemp(prefix="ingestq-anyone-"))
    try:
        umask = os.umask(0o022)  # what root makes here, others must read
        try:
            base.chmod(0o755)
            venv = base / "venv"
            subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], check=True, timeout=120)
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                 "--disable-pip-version-check", str(installed.wheel)],
                check=True, timeout=600,
            )  # fmt: skip
            app = base / "app"
            app.mkdir(mode=0o755)
            make_app_directory(app)
            for directory in (app, app / "input"):
                directory.chmod(0o755)
        finally:
            os.umask(umask)
        yield Installed(installed.wheel, venv, app)
    finally:
        shutil.rmtree(base)


def test_a_worker_dropped_to_nobody_ingests_as_nobody(
    installed_for_anyone: Installed, redis_url: str
) -> None:
    """Root starts ``ingestq worker --uid nobody`` of a venv anyone can read: the worker
    runs as nobody (every uid of the process), takes the producer's jobs through Redis,
    and the blobs it commits are nobody's."""
    installed = installed_for_anyone
    nobody = pwd.getpwnam("nobody")
    store = installed.app.parent / f"store-{uuid.uuid4().hex[:6]}"
    store.mkdir()
    os.chown(store, nobody.pw_uid, nobody.pw_gid)
    env = installed.env(
        INGESTQ_REDIS_URL=redis_url,
        INGESTQ_ROOT=str(store),
        INGESTQ_FILE_ROOTS=str(installed.app / "input"),
        INGESTQ_FSYNC="0",
    )
    name = f"uid-{uuid.uuid4().hex[:6]}@packaging"
    argv = [str(installed.venv / "bin" / "ingestq"), "worker", "--concurrency", "1",
            "--uid", "nobody", "--hostname", name]  # fmt: skip
    log = installed.app.parent / f"{name}.log"
    with answering_worker(argv, env, installed.app, log, redis_url) as worker:
        # Every id of the worker is nobody's, and none of root's groups is left.
        status = _status(worker.process.pid)
        assert status["Uid"] == [nobody.pw_uid] * 4, status
        assert status["Gid"] == [nobody.pw_gid] * 4, status
        assert set(status["Groups"]) == set(os.getgrouplist("nobody", nobody.pw_gid)), status
        check_producer_beside(installed, env, worker)
    blobs = list((store / "blobs" / "sha256").iterdir())
    assert blobs, "no blob was committed"
    assert {b.stat().st_uid for b in blobs} == {nobody.pw_uid}, "the blobs are not nobody's"


def _status(pid: int) -> dict[str, list[int]]:
    """The ``Uid``, ``Gid`` (real, effective, saved, file system) and ``Groups`` lines
    of process ``pid``."""
    out: dict[str, list[int]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, values = line.partition(":")
        if name in ("Uid", "Gid", "Groups"):
            out[name] = [int(v) for v in values.split()]
    assert set(out) == {"Uid", "Gid", "Groups"}, out
    return out
