"""The command line's surface: every command and option has help (no reST markup),
old flag spellings still work but are hidden, ``--version``, and every environment
variable the code reads is in the README's table."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import click
from click.testing import CliRunner

from ingestq.store import LocalStore
from ingestq.worker.cli import load_all

cli = load_all()

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("errdefs", "store", "fetch", "ingest", "images", "jobs", "tasks", "api", "worker")


def commands(cmd: click.Command, path: tuple[str, ...]) -> Iterator[tuple[str, click.Command]]:
    yield " ".join(path), cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from commands(sub, (*path, name))


def test_every_command_and_option_has_help_without_rest_markup() -> None:
    missing, markup = [], []
    for name, cmd in commands(cli, ("ingestq",)):
        if not (cmd.help or "").strip():
            missing.append(name)
        if "``" in (cmd.help or ""):
            markup.append(name)
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                if not (param.help or "").strip():
                    missing.append(f"{name} {param.opts}")
                if "``" in (param.help or ""):
                    markup.append(f"{name} {param.opts}")
    assert missing == [] and markup == []


def test_the_job_commands_take_quiet_and_verbose() -> None:
    table = dict(commands(cli, ("ingestq",)))
    for name in ("ingestq ingest", "ingestq pull", "ingestq job ls", "ingestq job wait"):
        opts = {o for p in table[name].params for o in p.opts}
        assert {"-q", "--quiet", "-v", "--verbose"} <= opts, name


def test_every_command_takes_verbose() -> None:
    """``-v/--verbose`` (and ``-vv``) on every command and subcommand, which loads
    with its module."""
    lacking = [
        name
        for name, cmd in commands(cli, ("ingestq",))
        if name != "ingestq" and "--verbose" not in {o for p in cmd.params for o in p.opts}
    ]
    assert lacking == []


def test_old_spellings_are_hidden_but_still_work(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "store"
    data = tmp_path / "blob"
    data.write_bytes(b"hello")
    digest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    old = runner.invoke(cli, ["content", "ingest", str(data), "--ref", "r1", "--expected-digest",
                              digest, "--expected-size", "5", "--root", str(root)])  # fmt: skip
    assert old.exit_code == 0, old.output
    wrong = runner.invoke(cli, ["content", "ingest", str(data), "--ref", "r2", "--digest",
                                digest.replace("2cf2", "0000"), "--root", str(root)])  # fmt: skip
    assert wrong.exit_code == 19, wrong.output  # FailedPrecondition: the new spelling checks
    assert [str(i.digest) for i in LocalStore(root).walk()] == [digest]
    content_help = runner.invoke(cli, ["content", "ingest", "--help"]).stdout
    assert "--digest" in content_help and "--expected-digest" not in content_help
    pull_help = runner.invoke(cli, ["pull", "--help"]).stdout
    assert "--tls-ca-cert" in pull_help and "--tlscacert" not in pull_help
    worker_help = runner.invoke(cli, ["worker", "--help"]).stdout
    assert "--log-level" in worker_help
    sub = cli.commands["worker"].make_context("worker", ["--loglevel", "DEBUG"])
    assert sub.params["loglevel"] == "DEBUG"


def test_version_and_json_errors_carry_code_and_exit_status(tmp_path: Path) -> None:
    runner = CliRunner()
    version = runner.invoke(cli, ["--version"], prog_name="ingestq")
    assert version.exit_code == 0 and re.fullmatch(r"ingestq \S+\n", version.stdout)
    root = tmp_path / "store"
    root.mkdir()
    r = runner.invoke(cli, ["job", "status", "nope", "--json", "--root", str(root)])
    assert r.exit_code == 15
    err = json.loads(r.stderr)
    assert err["exit_status"] == 15 and err["error"]["code"] == 5


def test_every_environment_variable_the_code_reads_is_in_the_readme_table() -> None:
    used: set[str] = set()
    for folder in CODE_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            # a family written ``INGESTQ_GC_*`` names no variable of its own
            used.update(re.findall(r"\bINGESTQ_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    readme = (REPO / "README.md").read_text()
    table = set(re.findall(r"^\| `(INGESTQ_[A-Z0-9_]+)` \|", readme, re.MULTILINE))
    assert used - table == set(), "undocumented"
    assert table - used == set(), "documented but never read"


def test_the_readme_puts_users_first_and_documents_completion() -> None:
    readme = (REPO / "README.md").read_text()
    headings = re.findall(r"^## (.+)$", readme, re.MULTILINE)
    assert headings[0].startswith("Install")
    assert headings.index("Environment variables") < headings.index("Development")
    assert headings[-1] == "Tests"
    assert "_INGESTQ_COMPLETE=bash_source ingestq" in readme
