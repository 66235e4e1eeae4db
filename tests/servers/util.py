"""Process, port and polling utilities shared by the real-server fixtures.

Nothing here sleeps for a fixed time to "let a server start": readiness is always a
predicate over the server's own protocol, polled by :func:`wait_until`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol, TypeVar

T = TypeVar("T")


class _Startable(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=_Startable)


@contextlib.contextmanager
def started(server: S) -> Iterator[S]:
    """Start ``server`` and stop it when the block ends, however it ends."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


#: The system packages that ``scripts/test`` installs for the real-server fixtures.
SYSTEM_PACKAGES = (
    "redis-server",
    "docker-registry",
    "containerd",
    "skopeo",
    "radosgw",
    "ceph-mon",
    "ceph-osd",
)

LOOPBACK = "127.0.0.1"


class MissingToolError(RuntimeError):
    """A binary that a real-server fixture needs is not on ``PATH``."""


class ServerStartError(RuntimeError):
    """A real server did not become ready; the message carries its log tail."""


class WaitTimeout(TimeoutError):
    """:func:`wait_until` ran out of time."""


def require_binary(name: str) -> str:
    """Return the absolute path of ``name`` on ``PATH``, or raise :class:`MissingToolError`.

    The message tells the reader how to get it: ``scripts/test`` installs every system
    package the fixtures use (``apt-get install redis-server docker-registry containerd
    skopeo radosgw ceph-mon ceph-osd``).
    """
    path = shutil.which(name)
    if path is None:
        raise MissingToolError(
            f"{name!r} is not on PATH; run scripts/test once (it installs the Debian packages "
            f"{' '.join(SYSTEM_PACKAGES)}) or `apt-get install -y {' '.join(SYSTEM_PACKAGES)}`"
        )
    return path


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    The kernel picks it (bind to port 0). Another process can take it before the caller
    binds it, so server starters retry with a fresh port when their bind fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.01,
    max_interval: float = 0.1,
    abort: Callable[[], str | None] | None = None,
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    Args:
        predicate: called repeatedly; an exception it raises counts as "not yet" and is
            reported if the wait times out.
        timeout: seconds before giving up.
        what: what is being waited for, for the error message ("redis PING on :6380").
        interval: first pause between polls, in seconds; it doubles up to ``max_interval``.
        max_interval: longest pause between polls, in seconds.
        abort: called before each poll; a non-None string stops the wait at once with that
            reason (e.g. "the server process exited with code 1").

    Raises:
        WaitTimeout: ``timeout`` passed; the message names ``what`` and the last exception.
        ServerStartError: ``abort`` returned a reason.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    pause = interval
    while True:
        if abort is not None:
            reason = abort()
            if reason is not None:
                raise ServerStartError(f"gave up waiting for {what}: {reason}")
        try:
            result = predicate()
        except Exception as exc:
            last_error = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, max_interval)


_PR_SET_PDEATHSIG = 1
_libc_name = ctypes.util.find_library("c")
_prctl: Callable[..., int] | None = None
if _libc_name is not None:
    with contextlib.suppress(OSError, AttributeError):
        _prctl = ctypes.CDLL(_libc_name, use_errno=True).prctl


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to SIGKILL this child when the thread that forked it dies.

    A crashed or killed pytest then leaves no orphan servers behind.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ServerProcess:
    """A child process whose stdout and stderr go to a log file, stopped by its PID.

    The log is opened in append mode, so a restarted server keeps one log across its
    lives. ``env``, when given, is the child's whole environment. The child dies with
    the thread that spawned it (``PR_SET_PDEATHSIG``): spawn long-lived servers from the
    main thread.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The PID of the running child, or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the child has been spawned and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def spawn(self) -> None:
        """Start the child (it must not be running)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env=self.env,
            preexec_fn=_die_with_parent,
        )

    def exit_reason(self) -> str | None:
        """None while running; otherwise "<name> exited with code N" plus its log tail."""
        if self._proc is None:
            return f"{self.name} was never started"
        code = self._proc.poll()
        if code is None:
            return None
        return f"{self.name} exited with code {code}; log tail:\n{self.log_tail()}"

    def log_text(self) -> str:
        """The whole log file as text ('' if it does not exist yet)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, *, kill: bool = False, timeout: float = 15.0) -> int | None:
        """Stop the child: SIGTERM (or SIGKILL with ``kill=True``), then wait for it.

        A child that ignores SIGTERM for ``timeout`` seconds gets SIGKILL. Returns the exit
        code, or None if it was not running.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self._reap()
        return proc.returncode

    def _reap(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class ToolError(subprocess.CalledProcessError):
    """A tool run by :func:`run_tool` exited non-zero; ``str()`` shows its output."""

    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        super().__init__(done.returncode, done.args, done.stdout, done.stderr)

    def __str__(self) -> str:
        return f"{super().__str__()}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


def run_tool(
    argv: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input_bytes: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command-line tool to completion and capture its output as text.

    Raises:
        subprocess.CalledProcessError: with ``check=True`` and a non-zero exit; its
            ``str()`` includes the tool's stdout and stderr.
    """
    full_env = {**os.environ, **env} if env is not None else None
    proc = subprocess.run(
        list(argv),
        input=input_bytes,
        capture_output=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )
    done = subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )
    if check and done.returncode != 0:
        raise ToolError(done)
    return done


def bounded(call: Callable[[], object], seconds: float = 30) -> BaseException | None:
    """Run ``call`` in a thread; the exception it raised (None if it returned). Fails
    the test if it is still running after ``seconds`` (it blocked)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as e:  # handed to the test
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still blocked after {seconds} s"
    return outcome[0]


def forked_exit_code(pid: int, seconds: float = 30, hung: str = "the forked child hung") -> int:
    """The exit code of the forked child ``pid``, reaped. Fails the test with ``hung``
    if it has not exited after ``seconds`` (it is killed and reaped first)."""
    exited = os.pidfd_open(pid)
    try:
        ended, _, _ = select.select([exited], [], [], seconds)
    finally:
        os.close(exited)
    if not ended:
        os.kill(pid, signal.SIGKILL)
    status = os.waitpid(pid, 0)[1]
    assert ended, hung
    return os.waitstatus_to_exitcode(status)
