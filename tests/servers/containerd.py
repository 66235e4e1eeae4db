"""A private ``containerd`` daemon (root, state and sockets in temp directories).

The daemon gets a generated config: its own root and state directories, a gRPC socket
in a short temp directory (unix socket paths are limited to ~107 bytes), metrics and
debug listeners off, and the CRI plugin (and the snapshotters that cannot work here)
disabled. It must run as root. Use :meth:`ContainerdDaemon.ctr` to drive it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.servers.util import ServerProcess, require_binary, run_tool, wait_until

DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
)
GC_PLUGIN = "io.containerd.gc.v1.scheduler"


class ContainerdDaemon:
    """One ``containerd`` process with a private root, state and socket.

    Args:
        directory: holds ``config.toml``, ``containerd.log``, ``root/``, ``state/``.
        namespace: the namespace :meth:`ctr` uses (``-n``).
        gc: keep containerd's garbage collector. With it, content that nothing
            references (e.g. ``ctr content ingest`` without a lease or a
            ``containerd.io/gc.root`` label) is deleted at the next GC, the first one
            about 100 ms after start. ``gc=False`` disables the GC scheduler plugin.
    """

    def __init__(self, directory: Path, *, namespace: str = "default", gc: bool = True) -> None:
        self.dir = directory
        self.namespace = namespace
        self.gc = gc
        self.root = directory / "root"
        self.state = directory / "state"
        self.config_path = directory / "config.toml"
        self.log_path = directory / "containerd.log"
        self._socket_dir = Path(tempfile.mkdtemp(prefix="ictrd-", dir="/tmp"))
        self._process: ServerProcess | None = None

    @property
    def address(self) -> str:
        """The gRPC unix socket path (pass to ``ctr -a`` or a gRPC client as ``unix://``)."""
        return str(self._socket_dir / "containerd.sock")

    @property
    def running(self) -> bool:
        """True while the daemon process is alive."""
        return self._process is not None and self._process.running

    def config(self) -> str:
        """The generated ``config.toml`` text."""
        plugins = DISABLED_PLUGINS if self.gc else (*DISABLED_PLUGINS, GC_PLUGIN)
        disabled = ", ".join(f'"{p}"' for p in plugins)
        return (
            "version = 2\n"
            f'root = "{self.root}"\n'
            f'state = "{self.state}"\n'
            f"disabled_plugins = [{disabled}]\n"
            "[grpc]\n"
            f'  address = "{self.address}"\n'
            "[ttrpc]\n"
            f'  address = "{self.address}.ttrpc"\n'
            "[debug]\n"
            '  address = ""\n'
            "[metrics]\n"
            '  address = ""\n'
            '[plugins."io.containerd.internal.v1.opt"]\n'
            f'  path = "{self.dir / "opt"}"\n'
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start the daemon and wait until ``ctr -a SOCKET version`` answers.

        Raises:
            MissingToolError: containerd or ctr is not installed (run scripts/test).
            ServerStartError: the daemon exited first; the log tail is included.
            WaitTimeout: no answer within ``timeout`` seconds.
        """
        if self.running:
            return
        binary = require_binary("containerd")
        require_binary("ctr")
        if os.geteuid() != 0:
            raise PermissionError("containerd needs root; run the tests as root (CI does)")
        for path in (self.root, self.state):
            path.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config())
        process = ServerProcess(
            "containerd", [binary, "--config", str(self.config_path)], self.log_path
        )
        process.spawn()
        self._process = process
        try:
            wait_until(
                lambda: self.ctr("version", check=False, timeout=5.0).returncode == 0,
                timeout,
                f"containerd at {self.address} (ctr version)",
                abort=process.exit_reason,
            )
        except BaseException:
            process.stop(kill=True)
            raise

    def ctr(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120.0,
        input_bytes: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ctr -a SOCKET -n NAMESPACE ARGS...`` and return its captured output."""
        argv = [require_binary("ctr"), "-a", self.address, "-n", self.namespace, *args]
        return run_tool(argv, timeout=timeout, check=check, input_bytes=input_bytes)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after ``timeout``)."""
        if self._process is not None:
            self._process.stop(timeout=timeout)

    def close(self) -> None:
        """Stop the daemon and remove its socket directory."""
        self.stop()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ContainerdDaemon {self.address} {state} dir={self.dir}>"


@contextmanager
def running_containerd(directory: Path, **options: Any) -> Iterator[ContainerdDaemon]:
    """Start a :class:`ContainerdDaemon` in ``directory`` and stop it on exit.

    ``options`` are :class:`ContainerdDaemon` keyword arguments.
    """
    daemon = ContainerdDaemon(directory, **options)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.close()
