"""Whether the user a worker drops to (Celery's ``--uid`` / ``--gid``) can load it.

Celery drops privileges before it imports the worker's task modules, and Python imports
some modules only when they are first used (the standard library's included). A user
that cannot read the Python installation (a venv under root's 0700 home, say) would stop
the worker with an import traceback, or fail a job later. ``ingestq worker`` asks first:
:func:`check_drop` makes the same drop in a forked child, which lists each directory the
worker imports from (:func:`import_dirs`).

Imports celery.platforms (the drop Celery makes) and errdefs.
"""

from __future__ import annotations

import os
import select
import signal
import sysconfig
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from ingestq import errdefs

#: The ``celery worker`` options that change the worker's user and group.
UID_OPTION = "--uid"
GID_OPTION = "--gid"

#: Packages whose modules a worker imports after the drop, besides the standard library.
WORKER_PACKAGES = (
    "ingestq", "ingestq.errdefs", "ingestq.store", "ingestq.fetch", "ingestq.ingest",
    "ingestq.images", "ingestq.jobs", "ingestq.tasks", "ingestq.s3", "ingestq.worker",
    "celery", "kombu", "billiard", "redis", "httpx",
)  # fmt: skip

#: Seconds the forked check may take (a hung network file system ends it).
CHECK_TIMEOUT = 30.0


def drop_options(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """The values of ``--uid`` and ``--gid`` in ``celery worker`` options ``argv``
    (``--uid NAME`` or ``--uid=NAME``; the last one counts), None where absent.
    InvalidArgument for an option without a value."""
    found: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        name, sep, value = arg.partition("=")
        if name not in (UID_OPTION, GID_OPTION):
            continue
        if not sep:
            value = next(args, "")
        if not value:
            raise errdefs.InvalidArgument(f"{name} needs a user or group name or id")
        found[name] = value
    return found.get(UID_OPTION), found.get(GID_OPTION)


def import_dirs(packages: Iterable[str] = WORKER_PACKAGES) -> list[str]:
    """The directories a worker imports from, symlinks resolved: the standard library,
    its extension modules (``lib-dynload``) and the directory of each of ``packages``
    (imported here if they are not yet)."""
    import importlib

    paths = sysconfig.get_paths()
    dirs = [paths["stdlib"], paths["platstdlib"], os.path.join(paths["platstdlib"], "lib-dynload")]
    for name in packages:
        module = importlib.import_module(name)
        dirs.extend(str(Path(p)) for p in getattr(module, "__path__", ()))
    out: list[str] = []
    for d in dirs:
        real = os.path.realpath(d)
        if os.path.isdir(real) and real not in out:
            out.append(real)
    return out


def check_drop(
    uid: str | None, gid: str | None, dirs: Sequence[str], *, timeout: float = CHECK_TIMEOUT
) -> None:
    """Return if a process that drops to ``uid`` / ``gid`` the way Celery does
    (:func:`celery.platforms.maybe_drop_privileges`: setgid, initgroups, setuid) can list
    every directory of ``dirs``.

    InvalidArgument for a user or group that does not exist; PermissionDenied when this
    process is not root (only root changes its user); FailedPrecondition naming the
    first directory that user cannot read; DeadlineExceeded after ``timeout`` seconds.
    """
    from celery.platforms import maybe_drop_privileges, parse_gid, parse_uid

    try:
        uid_number = None if uid is None else parse_uid(uid)
        gid_number = None if gid is None else parse_gid(gid)
    except KeyError as e:
        raise errdefs.InvalidArgument(f"--uid/--gid: {e.args[0] if e.args else e}") from None
    if os.geteuid() != 0:
        raise errdefs.PermissionDenied(
            f"--uid/--gid: only root can change the worker's user (this process runs as "
            f"uid {os.geteuid()}); start the worker as that user instead"
        )
    who = _who(uid, uid_number, gid)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop, list, report the first failure, exit
        os.close(reader)
        code = 0
        try:
            maybe_drop_privileges(uid=uid_number, gid=gid_number)
            for d in dirs:
                try:
                    os.listdir(d)
                except OSError as e:
                    os.write(writer, f"{d}\0{e.strerror}".encode())
                    code = 1
                    break
        except BaseException as e:  # reported to the parent, which raises
            os.write(writer, f"\0{type(e).__name__}: {e}".encode())
            code = 2
        os._exit(code)
    os.close(writer)
    try:
        report = _read_all(reader, pid, timeout)
    finally:
        os.close(reader)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code == 0:
        return
    path, _, reason = report.decode(errors="replace").partition("\0")
    if path:
        raise errdefs.FailedPrecondition(
            f"the worker's user ({who}) cannot read {path} ({reason}), which the worker "
            f"imports from after Celery drops privileges: install Python and ingestq where "
            f"that user can read them (a virtualenv under /opt, say), or start the worker "
            f"as that user without --uid"
        )
    raise errdefs.FailedPrecondition(
        f"the worker could not change to {who}: {reason or f'exit code {code}'}"
    )


def _who(uid: str | None, uid_number: int | None, gid: str | None) -> str:
    parts = []
    if uid is not None:
        parts.append(f"user {uid}" if uid.isdigit() else f"user {uid}, uid {uid_number}")
    if gid is not None:
        parts.append(f"group {gid}")
    return ", ".join(parts)


def _read_all(fd: int, pid: int, timeout: float) -> bytes:
    """What the child writes to ``fd`` until it closes it; DeadlineExceeded (the child
    killed) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        ready = select.select([fd], [], [], max(left, 0))[0] if left > 0 else []
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise errdefs.DeadlineExceeded(
                f"checking what the worker's user can read took over {timeout:g}s"
            )
        chunk = os.read(fd, 4096)
        if not chunk:
            return data
        data += chunk


__all__ = ["CHECK_TIMEOUT", "check_drop", "drop_options", "import_dirs"]
