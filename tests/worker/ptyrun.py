"""Run the ``ingestq`` command line on a real pseudo-terminal: the command's stdin,
stdout and stderr are the terminal, which is its controlling terminal, so that typing
Ctrl-C (``\\x03``) makes the kernel send SIGINT exactly as in an interactive shell.
Output is collected by a reader thread; :meth:`PtyRun.expect` waits (bounded) for a
pattern to appear."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from tests.servers.util import wait_until

REPO = Path(__file__).resolve().parents[2]
#: Take the terminal as the controlling terminal (the session is new) and let SIGINT
#: raise, as an interactive shell's foreground job does even when the tests run with it
#: ignored (in the background of a non-interactive shell); then run the CLI.
BOOT = (
    "import fcntl, signal, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from ingestq.worker.cli import main; main()"
)


class PtyRun:
    """``ingestq *args`` on a new pseudo-terminal of ``columns`` columns."""

    def __init__(self, args: list[str], env: Mapping[str, str], columns: int = 160) -> None:
        controller, terminal = pty.openpty()
        full_env = {**env, "COLUMNS": str(columns), "PYTHONPATH": str(REPO), "TERM": "xterm"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BOOT, *args], env=full_env, cwd=REPO, stdin=terminal,
            stdout=terminal, stderr=terminal, start_new_session=True,
        )  # fmt: skip
        os.close(terminal)
        self._controller = controller
        self._chunks: list[bytes] = []
        self._mutex = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._controller, 4096)
            except OSError:  # EIO: the terminal's other side closed
                return
            if not data:
                return
            with self._mutex:
                self._chunks.append(data)

    @property
    def output(self) -> str:
        """Everything the command wrote so far."""
        with self._mutex:
            return b"".join(self._chunks).decode(errors="replace")

    def expect(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Wait up to ``timeout`` seconds for ``pattern`` (a regex) in the output."""
        found: re.Match[str] = wait_until(
            lambda: re.search(pattern, self.output), timeout, f"{pattern!r} in {self.output!r}"
        )
        return found

    def ctrl_c(self) -> None:
        """Type Ctrl-C on the terminal."""
        os.write(self._controller, b"\x03")

    def wait(self, timeout: float = 60) -> int:
        """The exit status, once the command ended (within ``timeout`` seconds)."""
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        """Kill the command if it still runs and close the terminal."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        os.close(self._controller)
