"""Whether the user a worker drops to (Celery's ``--uid`` / ``--gid``) can load it.

Celery drops privileges before it imports the worker's task modules (its own worker
class among them), and Python imports some modules only when they are first used (the
standard library's included). A user that cannot read the Python installation (a venv
under root's 0700 home, say) would stop the worker with an import traceback, or fail a
job later. So the app's workers ask first, however they are started (``ingestq worker``
or ``celery -A ingestq.tasks.app worker``): :data:`CHECK_OPTION`, a hidden option of the
app's ``celery worker`` command, runs :func:`check_drop` while Celery reads its options,
before it detaches or drops. :func:`check_drop` makes Celery's drop in a forked child,
which checks with ``access(2)`` (as that user now) each path of :func:`import_paths`.

Imports click and celery.platforms (the options and the drop Celery makes) and errdefs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import select
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import click

from ingestq import errdefs

#: Seconds the forked check may take (a hung network file system ends it).
CHECK_TIMEOUT = 30.0

#: The signals blocked around the fork (and in the child throughout).
_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}

#: Seconds to wait for a killed child to be gone before leaving it to init.
REAP_TIMEOUT = 5.0


@dataclass(frozen=True)
class ImportPath:
    """A path the worker's user must reach: a directory to list and enter
    (``directory``), else a file to read."""

    path: str
    directory: bool


def import_paths() -> list[ImportPath]:
    """What a worker imports from, found without importing anything: each directory
    on ``sys.path`` (the standard library, ``lib-dynload``, site-packages,
    ``PYTHONPATH``; not the current directory, the running script's nor root's user
    site) and each entry in it; every package directory of ``ingestq`` with everything
    below it (their real paths: an editable install links them from elsewhere); the
    file of every module loaded so far. A zip file on ``sys.path`` is a file to read.
    Each path is named as Python opens it, without what does not exist or bytecode
    caches."""
    out: dict[str, ImportPath] = {}
    skip = _not_installed()

    def add(path: str, directory: bool) -> None:
        # The path as Python opens it (access(2) follows its links and checks every
        # directory on the way), once per file it names; skipped: what does not exist
        # (a dangling link) and bytecode caches, which Python does without.
        path = os.path.abspath(path)
        real = os.path.realpath(path)
        if real in out or not os.path.exists(path) or _is_cache(path):
            return
        out[real] = ImportPath(path, directory)

    for entry in sys.path:
        if not entry or os.path.realpath(entry) in skip:
            continue
        if os.path.isfile(entry):
            add(entry, False)
        elif os.path.isdir(entry):
            add(entry, True)
            for entry_child in _scandir(entry):
                add(entry_child.path, _is_dir(entry_child))
    spec = importlib.util.find_spec("ingestq")
    for package in (spec.submodule_search_locations or []) if spec else []:
        for top in [package, *(c.path for c in _scandir(package) if _is_dir(c))]:
            for path, directory in _walk(os.path.realpath(top)):
                add(path, directory)
    for module in list(sys.modules.values()):
        origin = getattr(module, "__file__", None)
        if isinstance(origin, str) and os.path.isfile(origin):
            add(origin, False)
    return list(out.values())


def _is_cache(path: str) -> bool:
    return path.endswith(".pyc") or os.path.basename(path) == "__pycache__"


def _not_installed() -> set[str]:
    """The ``sys.path`` entries Python adds for the command or the user, not the
    installation: the current directory, the directory of the running script (a venv's
    ``bin``) and root's own site-packages (``site.USER_SITE``)."""
    import site

    out = {os.path.realpath(os.getcwd())}
    if isinstance(site.USER_SITE, str):
        out.add(os.path.realpath(site.USER_SITE))
    if sys.argv and sys.argv[0] and sys.argv[0] not in ("-c", "-m"):
        out.add(os.path.dirname(os.path.realpath(sys.argv[0])))
    return out


def check_drop(
    uid: str | None,
    gid: str | None,
    paths: Sequence[ImportPath],
    *,
    timeout: float = CHECK_TIMEOUT,
) -> None:
    """Return if a process that drops to ``uid`` / ``gid`` the way Celery does
    (:func:`celery.platforms.maybe_drop_privileges`: setgid, initgroups, setuid) can
    reach every path of ``paths`` (list and enter a directory, read a file).

    InvalidArgument for a user or group that does not exist (a numeric uid too: Celery
    looks its name up); PermissionDenied when this process may not change its user or
    group; FailedPrecondition naming the first path that user cannot reach;
    DeadlineExceeded after ``timeout`` seconds (the child is killed).
    """
    from celery.platforms import parse_gid, parse_uid

    try:
        uid_number = None if uid is None else parse_uid(uid)
        gid_number = None if gid is None else parse_gid(gid)
        if uid_number is not None:
            pwd.getpwuid(uid_number)
    except KeyError as e:
        what = e.args[0] if e.args else str(e)
        raise errdefs.InvalidArgument(f"--uid/--gid: {what}") from None
    who = _who(uid, uid_number, gid)
    reader, writer = os.pipe()
    # Signals stay blocked across the fork: a Ctrl-C there must neither send the child
    # into the caller's code nor lose the child in the parent.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(reader)
        os.close(writer)
        raise
    if pid == 0:
        _child(reader, writer, uid_number, gid_number, paths)  # never returns
    try:
        os.close(writer)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        report = _read_all(reader, pid, timeout)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    except BaseException:
        _kill(pid)
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(reader)
    if code == 0:
        return
    kind, _, rest = report.partition(b"\0")
    if kind == b"path":
        path, _, reason = rest.partition(b"\0")
        raise errdefs.FailedPrecondition(
            f"the worker's user ({who}) cannot read {os.fsdecode(path)} "
            f"({reason.decode(errors='replace')}), which the worker imports from after Celery "
            f"drops privileges: install Python and ingestq where that user can read them (a "
            f"virtualenv under /opt, say), or start the worker as that user without --uid"
        )
    message = rest.decode(errors="replace") or f"exit code {code}"
    if kind == b"PermissionError":
        raise errdefs.PermissionDenied(
            f"--uid/--gid: this process (uid {os.getuid()}) may not change to {who}: "
            f"{message}; start the worker as root, or as that user without --uid"
        )
    raise errdefs.FailedPrecondition(f"the worker could not change to {who}: {message}")


class DropCheckFailed(click.ClickException):
    """:func:`check_drop` refused the worker's ``--uid`` / ``--gid`` (the errdefs error in
    :attr:`error`); ``celery worker`` prints it and exits 1."""

    def __init__(self, error: errdefs.ErrdefsError) -> None:
        super().__init__(f"ingestq worker cannot start: {error}")
        self.error = error


def _check_before_drop(ctx: click.Context, param: click.Parameter, _value: object) -> None:
    """:data:`CHECK_OPTION`'s callback: with a user or group to drop to (``--uid`` /
    ``--gid``, or Celery's ``worker_uid`` / ``worker_gid`` setting), :func:`check_drop`
    for them, once per command line; DropCheckFailed if it fails. Nothing while click
    only parses (``resilient_parsing``). A UsageError if the option is given, and a
    ClickException if Celery has not read its own options by then (never skipped)."""
    if ctx.resilient_parsing or ctx.meta.get(_CHECKED):
        return
    if param.name is not None and ctx.get_parameter_source(param.name) not in (
        None,
        click.core.ParameterSource.DEFAULT,
    ):
        raise click.UsageError(f"{param.opts[0]} is ingestq's own: do not give it", ctx)
    if "uid" not in ctx.params or "gid" not in ctx.params:
        raise click.ClickException(
            "ingestq cannot check the worker's user: Celery had not read --uid / --gid "
            "before the app's options (a Celery this ingestq does not know)"
        )
    ctx.meta[_CHECKED] = True
    # A setting may be a number (Celery's fallback reads worker_uid as it is).
    uid = str(ctx.params["uid"]) if ctx.params["uid"] not in (None, "") else None
    gid = str(ctx.params["gid"]) if ctx.params["gid"] not in (None, "") else None
    if uid is None and gid is None:
        return
    try:
        check_drop(uid, gid, import_paths())
    except errdefs.ErrdefsError as e:
        raise DropCheckFailed(e) from e


#: Marks a click context whose user check ran (Celery appends the app's options to its
#: command again each time its command line runs in a process).
_CHECKED = "ingestq.check-drop"


#: A ``celery worker`` option of the app (:attr:`celery.Celery.user_options`), hidden and
#: never given: click processes the options given on the command line first, then the
#: others, so its callback sees ``--uid`` and ``--gid`` and runs before the worker command
#: itself (which detaches, then drops privileges).
CHECK_OPTION = click.Option(
    ["--ingestq-check-drop"],
    is_flag=True,
    hidden=True,
    expose_value=False,
    callback=_check_before_drop,
)


def _child(
    reader: int, writer: int, uid: int | None, gid: int | None, paths: Sequence[ImportPath]
) -> None:
    """The forked child (its signals blocked until it ends): drop, check, report the
    first failure on ``writer``, exit. Never returns into the caller's code, whatever is
    raised."""
    code = 3
    try:
        os.close(reader)
        from celery.platforms import maybe_drop_privileges

        try:
            maybe_drop_privileges(uid=uid, gid=gid)
        except Exception as e:
            os.write(writer, f"{type(e).__name__}\0{e}".encode(errors="replace"))
            code = 2
        else:
            failed = next((p for p in paths if not os.access(p.path, _mode(p))), None)
            if failed is not None:
                os.write(writer, b"path\0" + os.fsencode(failed.path) + b"\0Permission denied")
            code = 0 if failed is None else 1
    finally:
        os._exit(code)


def _mode(p: ImportPath) -> int:
    return os.R_OK | os.X_OK if p.directory else os.R_OK


def _who(uid: str | None, uid_number: int | None, gid: str | None) -> str:
    parts = []
    if uid is not None:
        parts.append(f"user {uid}" if uid.isdigit() else f"user {uid}, uid {uid_number}")
    if gid is not None:
        parts.append(f"group {gid}")
    return ", ".join(parts)


def _read_all(fd: int, pid: int, timeout: float) -> bytes:
    """What the child writes to ``fd`` until it closes it; DeadlineExceeded after
    ``timeout`` seconds (the caller kills the child)."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise errdefs.DeadlineExceeded(
                f"checking what the worker's user can read took over {timeout:g}s"
            )
        chunk = os.read(fd, 4096)
        if not chunk:
            return data
        data += chunk


def _kill(pid: int) -> None:
    """SIGKILL the child and reap it, waiting at most :data:`REAP_TIMEOUT` (a child
    stuck in the kernel is left to init when this process ends)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + REAP_TIMEOUT
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            return
        if time.monotonic() >= deadline:
            return
        time.sleep(0.01)


def _scandir(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except OSError:
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _walk(top: str) -> Iterator[tuple[str, bool]]:
    """``top`` and every directory and file below it, as (path, is a directory)."""
    for directory, _, files in os.walk(top):
        yield directory, True
        for name in files:
            yield os.path.join(directory, name), False


__all__ = [
    "CHECK_OPTION",
    "CHECK_TIMEOUT",
    "DropCheckFailed",
    "ImportPath",
    "check_drop",
    "import_paths",
]
