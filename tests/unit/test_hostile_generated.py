"""Hostile-input suite, generated: command lines made by hypothesis from the CLI's own
definition (every command and every option click knows, read from the command group, so a new
option is fuzzed the day it is added), with hostile values: control characters, escape
sequences, undecodable bytes, huge and non-finite numbers, globs, shell and template syntax,
URLs urllib cannot parse, paths to hostile files (devices, fifos, sockets, loops, 3 GiB), and
the FARM_* variables set to the same.

A generated command line may be valid (`plan --format json`): then it must succeed. Either
way: no traceback, a failure is exactly one `error:` line, peak RSS under 512 MB, nothing
written outside the work dir (tests/hostile_support.py). Examples are derandomized: the same
cases run in every `make test`.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import click
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from orchestrator.cli import cli
from tests.hostile_files import CELL, KINDS, make_hostile
from tests.hostile_support import (
    REPO,
    Tally,
    Work,
    make_work,
    outside_changes,
    problems_of,
    run_in_process,
    tree_state,
)

TALLY = Tally("generated (hypothesis: every command, option and FARM_* variable)")
EXAMPLES_PER_COMMAND = 30
_COUNTER = itertools.count()

HOSTILE_TOKENS = [
    "", " ", "\n", "\r\n", "\t", "\x1b[2J\x1b[31m", "\u2028", "\u202e", "\udcff", "\udc80x",
    "nan", "inf", "-inf", "-1", "0", "1e400", "-1e400", "9" * 40, "0x10", "1_000",
    "*", "**", "?", "[", "[!", "*" * 300, "../x", "../../../../etc/passwd", "/", "/dev/zero",
    "/dev/stdin", "/proc/self/environ", "{{7*7}}", "{%raw%}", "{version.__class__}", "$(id)",
    "`id`", "a;b", "a|b", "a&&b", "'", '"', "\\", "--", "-", "--help", "-h", "--version",
    "http://[::1/", "http://h:99999/", "ftp://x", "file:///dev/zero", "ssh://h; id",
    "arm64=", "arm64=ssh://h", "mips=ssh://h", "amd64=unix:///nope.sock", "us east 1",
    "us-east-1\n", "Bad_Bucket", "a..b", "farm-test", CELL, CELL + "\n", "3.13.5", "3.13.5\n",
    "03.013.05", "3.13.*", "*-arm64", "*t-*", "release", "fast", "turbo", "json", "table",
    "github-matrix", "auto", "copy", "bind", "x" * 5000, "é" * 100, "\U0001f600",
]  # fmt: skip

_FILE = "@file:"  # a token naming a hostile file of that kind, made in the work dir
tokens = (
    st.sampled_from(HOSTILE_TOKENS)
    | st.sampled_from([f"{_FILE}{kind}" for kind in KINDS])
    | st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), max_size=30)
    | st.integers(-(2**70), 2**70).map(str)
    | st.floats().map(repr)
)


def _options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]


def _option_args(draw: st.DrawFn, options: list[click.Option]) -> list[str]:
    argv: list[str] = []
    if not options:
        return argv
    chosen = draw(st.lists(st.sampled_from(options), max_size=4, unique_by=lambda o: o.name))
    for option in chosen:
        flag = draw(st.sampled_from(option.opts))
        if option.is_flag:
            argv.append(flag)
        else:
            argv += [flag, draw(tokens)]
    return argv


@st.composite
def command_lines(draw: st.DrawFn, name: str) -> tuple[list[str], dict[str, str]]:
    command = cli.commands[name]
    argv: list[str] = []
    if draw(st.integers(0, 4)) == 0:  # now and then: most lines should reach the command
        argv = _option_args(draw, [o for o in _options(cli) if o.name != "version"])
    argv.append(name)
    argv += _option_args(draw, _options(command))
    if any(isinstance(p, click.Argument) for p in command.params):
        argv += draw(st.lists(tokens, max_size=3))
    variables = [
        o.envvar for o in (*_options(cli), *_options(command)) if isinstance(o.envvar, str)
    ]
    env: dict[str, str] = {}
    if variables and draw(st.booleans()):
        env[draw(st.sampled_from(variables))] = draw(tokens)
    return argv, env


def _resolve(value: str, work: Work) -> str:
    if not value.startswith(_FILE):
        return value
    path = work.root / f"hostile-{value.removeprefix(_FILE)}"
    if not path.exists() and not path.is_symlink():
        make_hostile(path, value.removeprefix(_FILE))
    return str(path)


def _run(argv: list[str], env: dict[str, str], base: Path, label: str) -> None:
    root = base / f"example-{next(_COUNTER)}"
    work = make_work(root / "work")
    argv = [_resolve(a, work) for a in argv]
    env = {k: _resolve(v, work).replace("\0", "") for k, v in env.items()}
    before = tree_state(REPO)
    outcome = run_in_process(argv, work, env=env)
    problems = problems_of(outcome, refused=False) + outside_changes(work, before)
    TALLY.add(outcome, problems, case=f"{label}: {argv!r} {env!r}")
    assert not problems, f"{argv!r} env {env!r}: {problems}\n{outcome.describe()}"


SETTINGS: dict[str, Any] = {
    "max_examples": EXAMPLES_PER_COMMAND,
    "deadline": None,
    "derandomize": True,
    "database": None,
    "phases": [Phase.explicit, Phase.generate],  # a failure is printed as found, not shrunk
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_generated_command_lines_give_a_result_or_one_error_line(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp(f"generated-{name}")

    @settings(**SETTINGS)
    @given(line=command_lines(name))
    def check(line: tuple[list[str], dict[str, str]]) -> None:
        _run(*line, base=base, label=name)

    check()


def test_every_command_is_fuzzed() -> None:
    # The parametrization above reads the group: a command added later is fuzzed too.
    assert sorted(cli.commands) == [
        "build", "check-manifest", "fetch", "nightly", "plan", "publish", "render", "verify",
        "versions",
    ]  # fmt: skip


def test_the_work_dirs_live_in_a_temp_dir() -> None:
    assert Path(tempfile.gettempdir()) != REPO
