"""``ingestq.worker.privileges``: the ``--uid`` / ``--gid`` options found among Celery's,
the directories a worker imports from, and the check that the user a worker drops to can
read them, made with a real drop (setgid, initgroups, setuid) in a forked child.

The tests run as root (the suite does: it installs system packages) and drop to Debian's
``nobody`` / ``nogroup``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import ingestq.tasks
from ingestq import errdefs
from ingestq.worker.privileges import check_drop, drop_options, import_dirs
from tests.servers.util import forked_exit_code

NOBODY = "nobody"


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory anyone can list (pytest's own temporary directories are root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="ingestq-public-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def private_dir(public_dir: Path) -> Path:
    """A directory only root can list, inside :func:`public_dir`."""
    path = public_dir / "private"
    path.mkdir(mode=0o700)
    path.chmod(0o700)
    return path


def test_root_runs_the_suite() -> None:
    assert os.geteuid() == 0, "these tests drop privileges: run them as root"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ((), (None, None)),
        (("-E", "--without-gossip"), (None, None)),
        (("--uid", "nobody"), ("nobody", None)),
        (("--uid=65534", "--gid", "nogroup"), ("65534", "nogroup")),
        (("--gid=100", "--uid", "a", "--uid", "b"), ("b", "100")),
        (("--uidx", "nobody"), (None, None)),
    ],
)
def test_drop_options_finds_uid_and_gid_in_either_form(
    argv: tuple[str, ...], expected: tuple[str | None, str | None]
) -> None:
    assert drop_options(argv) == expected


@pytest.mark.parametrize("argv", [("--uid",), ("--gid=",), ("-E", "--uid")])
def test_an_option_without_a_value_is_invalid(argv: tuple[str, ...]) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="needs a user or group"):
        drop_options(argv)


def test_import_dirs_hold_the_standard_library_and_the_worker_packages() -> None:
    dirs = import_dirs()
    assert os.path.realpath(sysconfig.get_paths()["stdlib"]) in dirs
    assert os.path.realpath(os.path.dirname(os.__file__)) in dirs
    (tasks_dir,) = ingestq.tasks.__path__
    assert os.path.realpath(tasks_dir) in dirs
    import celery

    assert os.path.realpath(os.path.dirname(celery.__file__)) in dirs
    assert len(dirs) == len(set(dirs))
    assert all(os.path.isdir(d) for d in dirs)


def test_a_user_who_can_list_every_directory_passes(public_dir: Path) -> None:
    (public_dir / "sub").mkdir(mode=0o755)
    check_drop(NOBODY, None, [str(public_dir), str(public_dir / "sub")])


def test_the_first_directory_the_user_cannot_list_is_named(
    public_dir: Path, private_dir: Path
) -> None:
    nobody = pwd.getpwnam(NOBODY).pw_uid
    with pytest.raises(errdefs.FailedPrecondition) as caught:
        check_drop(NOBODY, None, [str(public_dir), str(private_dir)])
    message = str(caught.value)
    assert f"user nobody, uid {nobody}" in message
    assert f"cannot read {private_dir} (Permission denied)" in message
    assert "without --uid" in message


def test_a_numeric_uid_and_a_group_are_dropped_to(private_dir: Path) -> None:
    nobody = pwd.getpwnam(NOBODY).pw_uid
    with pytest.raises(errdefs.FailedPrecondition, match=f"user {nobody}, group nogroup"):
        check_drop(str(nobody), "nogroup", [str(private_dir)])


def test_a_group_alone_keeps_root_which_reads_everything(private_dir: Path) -> None:
    check_drop(None, "nogroup", [str(private_dir)])


@pytest.mark.parametrize(
    ("uid", "gid", "what"),
    [("no-such-user-ingestq", None, "User does not exist"),
     (NOBODY, "no-such-group-ingestq", "Group does not exist")],
)  # fmt: skip
def test_an_unknown_user_or_group_is_invalid(
    uid: str, gid: str | None, what: str, public_dir: Path
) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=what):
        check_drop(uid, gid, [str(public_dir)])


def test_only_root_may_change_the_user(public_dir: Path) -> None:
    """In a child that is already ``nobody``: PermissionDenied, nothing forked."""
    nobody = pwd.getpwnam(NOBODY)
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(nobody.pw_gid)
            os.setgroups([])
            os.setuid(nobody.pw_uid)
            try:
                check_drop(NOBODY, None, [str(public_dir)])
            except errdefs.PermissionDenied as e:
                os._exit(0 if "only root" in str(e) else 3)
            os._exit(4)
        except BaseException:
            os._exit(2)
    assert forked_exit_code(pid, 30, "the check as nobody hung") == 0


def test_a_check_past_its_bound_is_killed_and_deadline_exceeded(public_dir: Path) -> None:
    with pytest.raises(errdefs.DeadlineExceeded, match="took over 0s"):
        check_drop(NOBODY, None, [str(public_dir)], timeout=0)
