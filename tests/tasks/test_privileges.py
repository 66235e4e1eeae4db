"""``ingestq.tasks.privileges``: the paths a worker imports from, the check that the
user a worker drops to can reach them, made with Celery's real drop (setgid, initgroups,
setuid) in a forked child, and the app's worker option that runs it while Celery reads
its options.

The tests run as root (the suite does: it installs system packages) and drop to the
system's ``nobody``.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import celery.platforms
import click
import pytest
from celery.bin.worker import worker

import ingestq.tasks
from ingestq import errdefs
from ingestq.tasks import privileges
from ingestq.tasks.app import app
from ingestq.tasks.privileges import (
    DropCheckFailed,
    ImportPath,
    check_drop,
    import_paths,
)
from tests.servers.util import forked_exit_code

NOBODY = pwd.getpwnam("nobody")


def _other_group() -> grp.struct_group:
    """A group that is neither root's nor nobody's (primary or supplementary)."""
    for group in grp.getgrall():
        if group.gr_gid not in (0, NOBODY.pw_gid) and "nobody" not in group.gr_mem:
            return group
    raise AssertionError("no group other than root's and nobody's on this system")


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory anyone can list (pytest's own temporary directories are root's, 0700)."""
    old = os.umask(0o022)
    path = Path(tempfile.mkdtemp(prefix="ingestq-public-"))
    path.chmod(0o755)
    yield path
    os.umask(old)
    shutil.rmtree(path)


def _dir(path: Path) -> ImportPath:
    return ImportPath(str(path), directory=True)


def _file(path: Path) -> ImportPath:
    return ImportPath(str(path), directory=False)


def test_root_runs_the_suite() -> None:
    assert os.geteuid() == 0, "these tests drop privileges: run them as root"


def test_import_paths_cover_the_standard_library_its_extensions_and_the_packages() -> None:
    paths = {p.path: p.directory for p in import_paths()}
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    extensions = os.path.realpath(sysconfig.get_config_var("DESTSHARED"))
    assert paths[stdlib] is True and paths[extensions] is True
    assert paths[os.path.realpath(os.__file__)] is False
    (tasks_dir,) = ingestq.tasks.__path__
    lua = os.path.join(os.path.realpath(tasks_dir), "lua", "acquire.lua")
    assert paths[lua] is False, "the package data the worker reads"
    celery_dir = os.path.realpath(os.path.dirname(celery.platforms.__file__))
    assert paths[celery_dir] is True
    assert os.path.realpath(os.getcwd()) not in paths, "the current directory is not installed"


def test_a_user_who_can_reach_every_path_passes(public_dir: Path) -> None:
    (public_dir / "sub").mkdir(mode=0o755)
    (public_dir / "mod.py").write_text("x = 1\n")
    check_drop("nobody", None, [_dir(public_dir), _dir(public_dir / "sub"),
                                _file(public_dir / "mod.py")])  # fmt: skip


@pytest.mark.parametrize(
    ("name", "mode", "directory"),
    [("private", 0o700, True), ("readable-not-searchable", 0o754, True),
     ("unreadable.py", 0o600, False)],
)  # fmt: skip
def test_the_first_path_the_user_cannot_reach_is_named(
    public_dir: Path, name: str, mode: int, directory: bool
) -> None:
    path = public_dir / name
    if directory:
        path.mkdir()
    else:
        path.write_text("x = 1\n")
    path.chmod(mode)
    with pytest.raises(errdefs.FailedPrecondition) as caught:
        check_drop("nobody", None, [_dir(public_dir), ImportPath(str(path), directory)])
    message = str(caught.value)
    assert f"user nobody, uid {NOBODY.pw_uid}" in message
    assert f"cannot read {path} (Permission denied)" in message
    assert "without --uid" in message


def test_the_group_option_is_the_group_dropped_to(public_dir: Path) -> None:
    """A 0750 directory of another group: nobody reaches it with ``--gid`` of that
    group, not with its own primary group (and keeps none of root's groups)."""
    group = _other_group()
    shared = public_dir / "shared"
    shared.mkdir(mode=0o750)
    shared.chmod(0o750)
    os.chown(shared, 0, group.gr_gid)
    check_drop(str(NOBODY.pw_uid), group.gr_name, [_dir(shared)])
    with pytest.raises(errdefs.FailedPrecondition, match=f"user {NOBODY.pw_uid}\\)"):
        check_drop(str(NOBODY.pw_uid), None, [_dir(shared)])


def test_a_group_alone_keeps_root_which_reads_everything(public_dir: Path) -> None:
    private = public_dir / "private"
    private.mkdir(mode=0o700)
    check_drop(None, _other_group().gr_name, [_dir(private)])


@pytest.mark.parametrize(
    ("uid", "gid", "what"),
    [("no-such-user-ingestq", None, "User does not exist"),
     ("nobody", "no-such-group-ingestq", "Group does not exist"),
     ("4000000001", None, "uid not found")],
)  # fmt: skip
def test_an_unknown_user_or_group_is_invalid(
    uid: str, gid: str | None, what: str, public_dir: Path
) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=what):
        check_drop(uid, gid, [_dir(public_dir)])


def test_a_process_that_may_not_change_its_user_is_permission_denied(public_dir: Path) -> None:
    """In a child that already is ``nobody``: Celery's drop fails there (EPERM)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(NOBODY.pw_gid)
            os.setgroups([])
            os.setuid(NOBODY.pw_uid)
            try:
                check_drop("daemon", None, [_dir(public_dir)])
            except errdefs.PermissionDenied as e:
                os._exit(0 if "may not change to user daemon" in str(e) else 3)
            os._exit(4)
        except BaseException:
            os._exit(2)
        finally:
            os._exit(5)
    assert forked_exit_code(pid, 30, "the check as nobody hung") == 0


def test_a_check_past_its_bound_is_killed_and_reaped(
    public_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that hangs (here in the drop) is killed at the bound, and reaped."""
    pid_file = public_dir / "child.pid"

    def hang(uid: object = None, gid: object = None) -> None:
        (public_dir / "child.tmp").write_text(str(os.getpid()))
        os.replace(public_dir / "child.tmp", pid_file)  # whole, or not there
        time.sleep(120)

    monkeypatch.setattr(celery.platforms, "maybe_drop_privileges", hang)
    started = time.monotonic()
    with pytest.raises(errdefs.DeadlineExceeded, match="took over 3s"):
        check_drop("nobody", None, [_dir(public_dir)], timeout=3)
    assert time.monotonic() - started < 30
    child = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # gone: a zombie would still take the signal


def test_the_checking_child_never_returns_into_the_callers_code(
    public_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the drop raises (even a BaseException), the child exits at once with its
    code: a child that went on into the caller would keep the pipe open, and the parent
    would wait out the bound (DeadlineExceeded) instead."""

    def interrupted(uid: object = None, gid: object = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(celery.platforms, "maybe_drop_privileges", interrupted)
    with pytest.raises(errdefs.FailedPrecondition, match="exit code 3"):
        check_drop("nobody", None, [_dir(public_dir)], timeout=20)


def test_import_paths_are_checked_as_python_opens_them(
    public_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``sys.path`` entry that is a link inside a private directory is checked as
    Python opens it (through that directory), not as the public directory it points
    to; a dangling link and a bytecode cache (Python does without them) are left out."""
    target = public_dir / "publib"
    target.mkdir()
    (target / "mod.py").write_text("x = 1\n")
    private = public_dir / "private"
    private.mkdir(mode=0o700)
    (private / "lib").symlink_to(target)
    site = public_dir / "site"
    site.mkdir()
    (site / "dangling").symlink_to(public_dir / "no-such-thing")
    (site / "__pycache__").mkdir(mode=0o700)
    monkeypatch.setattr(sys, "path", [str(private / "lib"), str(site)])
    ours = [p for p in import_paths() if p.path.startswith(str(public_dir))]
    names = {p.path for p in ours}
    assert str(private / "lib") in names and str(site) in names
    assert not any("dangling" in n or "__pycache__" in n for n in names), names
    with pytest.raises(errdefs.FailedPrecondition, match=f"cannot read {private / 'lib'}"):
        check_drop("nobody", None, ours)


@pytest.fixture
def worker_command(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """Celery's real command line (``app.worker_main``), with the worker command's body
    replaced by one that records its options: the app's options are attached as Celery
    attaches them (on copies of its commands' option lists, restored afterwards)."""
    from celery.bin import celery as celery_cli

    started: list[dict[str, object]] = []
    for command in (worker, celery_cli.beat, celery_cli.events):
        monkeypatch.setattr(command, "params", list(command.params))
    monkeypatch.setattr(worker, "callback", lambda **options: started.append(options))
    return started


@pytest.mark.parametrize("order", ["uid-first", "uid-last"])
def test_the_apps_worker_option_checks_the_user_before_the_worker_command_runs(
    public_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    worker_command: list[dict[str, object]],
    order: str,
) -> None:
    """Wherever ``--uid`` stands, a path nobody cannot enter stops Celery's command line
    with the check's error before the worker command runs (it would detach or drop)."""
    private = public_dir / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setattr(privileges, "import_paths", lambda: [_dir(public_dir), _dir(private)])
    others = ["-E", "-Q", "ingestq", "--loglevel=INFO"]
    argv = ["--uid", "nobody", *others] if order == "uid-first" else [*others, "--uid=nobody"]
    with pytest.raises(DropCheckFailed) as caught:
        app.worker_main(["worker", *argv])
    assert not worker_command, "the worker command ran"
    assert isinstance(caught.value.error, errdefs.FailedPrecondition)
    assert f"cannot read {private} (Permission denied)" in str(caught.value.error)
    assert caught.value.format_message().startswith("ingestq worker cannot start: ")


@pytest.mark.parametrize("where", ["setting", "environment"])
def test_a_user_from_celerys_setting_or_environment_is_checked_too(
    public_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    worker_command: list[dict[str, object]],
    where: str,
) -> None:
    """Celery also takes the user from its ``worker_uid`` setting (a number here, as a
    configuration may hold it) and, on its own command line, from ``CELERY_WORKER_UID``:
    the app's option is read after Celery's, so it checks that user as well."""
    private = public_dir / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setattr(privileges, "import_paths", lambda: [_dir(private)])
    if where == "setting":
        monkeypatch.setitem(app.conf, "worker_uid", NOBODY.pw_uid)
        run = lambda: app.worker_main(["worker", "-E"])  # noqa: E731
    else:
        from celery.bin.celery import celery as celery_cli

        monkeypatch.setenv("CELERY_WORKER_UID", "nobody")
        monkeypatch.setattr(celery_cli.params[0], "default", app)
        run = lambda: celery_cli.main(  # noqa: E731
            ["worker", "-E"], standalone_mode=False, auto_envvar_prefix="CELERY"
        )
    with pytest.raises(DropCheckFailed, match=f"cannot read {private}"):
        run()
    assert not worker_command, "the worker command ran"


# Celery appends the app's options to its worker command each time its command line
# runs, and click warns about the copies.
@pytest.mark.filterwarnings("ignore:The parameter --ingestq-check-drop is used more than once")
def test_the_check_passes_a_user_who_can_read_everything_and_runs_once(
    public_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    worker_command: list[dict[str, object]],
) -> None:
    """A user who reaches every path: the worker command runs, after one check even
    though Celery attached the app's options again for the second command line."""
    checks: list[tuple[str | None, str | None]] = []
    real = privileges.check_drop

    def counted(uid: str | None, gid: str | None, paths: list[ImportPath]) -> None:
        checks.append((uid, gid))
        real(uid, gid, paths)

    monkeypatch.setattr(privileges, "check_drop", counted)
    monkeypatch.setattr(privileges, "import_paths", lambda: [_dir(public_dir)])
    app.worker_main(["worker", "-E"])
    app.worker_main(["worker", "--uid", "nobody"])
    assert checks == [("nobody", None)], "no --uid: nothing to check; then exactly once"
    assert [options["uid"] for options in worker_command] == [None, "nobody"]


def test_the_apps_option_may_not_be_given(worker_command: list[dict[str, object]]) -> None:
    """Given before ``--uid``, it would be read before Celery's option: refused."""
    with pytest.raises(click.UsageError, match="is ingestq's own"):
        app.worker_main(["worker", "--ingestq-check-drop", "--uid", "nobody"])
    assert not worker_command
