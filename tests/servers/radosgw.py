"""A real throwaway Ceph with its S3 gateway (``radosgw``) on free loopback ports, for
the S3 store's contract on a second, stricter and older server than SeaweedFS.

One host, no systemd, no disks, no auth: one monitor, one OSD on ``memstore`` (its
objects live in the OSD's memory), pools of size one, and ``radosgw`` with the beast
frontend; every daemon runs in the foreground as a child of the fixture and is killed
(SIGKILL, the data is throwaway) at the end. The S3 user's keys are made with
``radosgw-admin user create``.

The binaries come from Debian's ``radosgw ceph-mon ceph-osd`` packages, which
``scripts/test`` installs (Ceph 16 "pacific" on bookworm).
"""

from __future__ import annotations

import json
import uuid
from contextlib import AbstractContextManager
from pathlib import Path

from tests.servers.seaweed import S3Endpoint
from tests.servers.util import (
    LOOPBACK,
    ServerProcess,
    ServerStartError,
    free_port,
    require_binary,
    run_tool,
    started,
    wait_until,
)

#: How many fresh port sets (and data directories) a start tries when another
#: process took one of the ports.
PORT_ATTEMPTS = 3
#: Seconds a ceph command-line tool (``ceph``, ``radosgw-admin``, a mkfs) may take.
TOOL_TIMEOUT = 60.0

#: The cluster's configuration; ``{dir}``, ``{fsid}``, ``{mon_port}`` and
#: ``{rgw_port}`` are filled in. No auth, so no keyrings; ``crc`` wire modes, since
#: the ``secure`` mode radosgw asks of a monitor needs an authenticated session.
#: Short paxos intervals: radosgw makes its pools one by one at start, each a monitor
#: proposal, which the default 1 s propose interval made a 16 s start (now ~1 s).
#: ``memstore device bytes`` is a cap on the OSD's memory, not an allocation.
_CONF = """\
[global]
fsid = {fsid}
mon host = v2:{loopback}:{mon_port}
public addr = {loopback}
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
ms mon client mode = crc
ms mon service mode = crc
ms mon cluster mode = crc
ms client mode = crc
ms service mode = crc
ms cluster mode = crc
osd objectstore = memstore
memstore device bytes = 4294967296
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 1
osd pool default pgp num = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
paxos propose interval = 0.01
paxos min wait = 0.001
run dir = {dir}/run
admin socket = {dir}/run/$cluster-$name.asok
pid file = {dir}/run/$name.pid
log file = {dir}/$name.log
log to stderr = false
err to stderr = true
[mon.a]
mon data = {dir}/mon.a
[osd.0]
osd data = {dir}/osd.0
[client.rgw]
rgw frontends = beast endpoint={loopback}:{rgw_port}
rgw data = {dir}/rgw
rgw dns name = {loopback}
"""


class RadosgwServer:
    """A one-host Ceph (mon, OSD, radosgw) with its data in ``directory``; the S3
    gateway is :attr:`endpoint` (an admin user's keys)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.endpoint = S3Endpoint(
            url="",
            access_key=f"AK{uuid.uuid4().hex[:18].upper()}",
            secret_key=uuid.uuid4().hex + uuid.uuid4().hex[:8],
        )
        self._processes: list[ServerProcess] = []
        self._conf: Path | None = None

    @property
    def running(self) -> bool:
        """True while every daemon is alive."""
        return bool(self._processes) and all(p.running for p in self._processes)

    def _abort(self) -> str | None:
        for process in self._processes:
            reason = process.exit_reason()
            if reason is not None:
                return reason
        return None

    def _tool(self, *argv: str) -> str:
        assert self._conf is not None
        done = run_tool(
            [require_binary(argv[0]), "--conf", str(self._conf), *argv[1:]], timeout=TOOL_TIMEOUT
        )
        return done.stdout

    def _spawn(self, name: str, *argv: str) -> None:
        assert self._conf is not None
        process = ServerProcess(
            name,
            [require_binary(argv[0]), "--conf", str(self._conf), *argv[1:]],
            self._conf.parent / f"{name}.out",
        )
        process.spawn()
        self._processes.append(process)

    def start(self, timeout: float = 90.0) -> None:
        """Make the cluster, start its daemons, create the S3 user, and wait until a
        bucket can be written with its keys.

        Raises MissingToolError (a ceph binary is not installed), ServerStartError (a
        daemon exited; its log tail included), WaitTimeout, or the ToolError of a
        failing ceph tool.
        """
        for binary in ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph"):
            require_binary(binary)
        for attempt in range(PORT_ATTEMPTS):
            try:
                self._start_once(self.dir / f"cluster{attempt}", timeout)
            except ServerStartError as exc:
                self.stop()
                if attempt + 1 < PORT_ATTEMPTS and "address already in use" in str(exc).lower():
                    continue
                raise
            except BaseException:
                self.stop()
                raise
            return

    def _start_once(self, directory: Path, timeout: float) -> None:
        for sub in ("run", "mon.a", "osd.0", "rgw"):
            (directory / sub).mkdir(parents=True)
        fsid = str(uuid.uuid4())
        mon_port, rgw_port = free_port(), free_port()
        self._conf = directory / "ceph.conf"
        self._conf.write_text(
            _CONF.format(
                dir=directory, fsid=fsid, loopback=LOOPBACK, mon_port=mon_port, rgw_port=rgw_port
            )
        )
        url = f"http://{LOOPBACK}:{rgw_port}"
        self.endpoint = S3Endpoint(url, self.endpoint.access_key, self.endpoint.secret_key)
        monmap = directory / "monmap"
        run_tool(
            [
                require_binary("monmaptool"),
                "--create",
                "--fsid",
                fsid,
                "--addv",
                "a",
                f"[v2:{LOOPBACK}:{mon_port}]",
                str(monmap),
            ],
            timeout=TOOL_TIMEOUT,
        )
        self._tool("ceph-mon", "--id", "a", "--mkfs", "--monmap", str(monmap))
        self._spawn("mon.a", "ceph-mon", "--id", "a", "-f")
        osd_uuid = str(uuid.uuid4())
        # Blocks until the monitor answers (or the tool's timeout).
        self._tool("ceph", "osd", "new", osd_uuid, "0")
        self._tool("ceph-osd", "--id", "0", "--mkfs", "--osd-uuid", osd_uuid)
        self._spawn("osd.0", "ceph-osd", "--id", "0", "-f")
        # A radosgw started before the OSD is up may sit out a 5 s timer on its pools.
        wait_until(self._osd_up, timeout, "the OSD to boot", abort=self._abort)
        self._spawn("rgw", "radosgw", "--name", "client.rgw", "-f")
        wait_until(self._anonymous_ready, timeout, f"radosgw on {url}", abort=self._abort)
        self._tool(
            "radosgw-admin",
            "user",
            "create",
            "--uid=ingestq",
            "--display-name=ingestq",
            f"--access-key={self.endpoint.access_key}",
            f"--secret={self.endpoint.secret_key}",
        )
        wait_until(self._ready, timeout, f"radosgw S3 writes on {url}", abort=self._abort)

    def _osd_up(self) -> bool:
        """The monitor's OSD map has the OSD up."""
        stat = json.loads(self._tool("ceph", "osd", "stat", "--format", "json"))
        return int(stat.get("num_up_osds", 0)) == 1

    def _anonymous_ready(self) -> bool:
        """The gateway answers HTTP (it has made its pools and zone)."""
        import urllib.request

        with urllib.request.urlopen(self.endpoint.url + "/", timeout=2) as resp:
            return bool(resp.status == 200)

    def _ready(self) -> bool:
        return self.endpoint.writes(read_timeout=5)

    def log_text(self) -> str:
        """The daemons' outputs so far, each under a header line."""
        return "\n".join(f"--- {p.name} ---\n{p.log_text()}" for p in self._processes)

    def stop(self) -> None:
        """SIGKILL every daemon (the data is throwaway), radosgw first."""
        for process in reversed(self._processes):
            process.stop(kill=True)
        self._processes = []

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RadosgwServer {self.endpoint.url} {state} dir={self.dir}>"


def running_radosgw(directory: Path) -> AbstractContextManager[RadosgwServer]:
    """Start a :class:`RadosgwServer` in ``directory`` and stop it on exit."""
    return started(RadosgwServer(directory))
