"""The CLI in-process: exit codes and one-line errors (no Docker, no network)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import click
import pytest

from orchestrator.cli import cli, main


@pytest.fixture
def project(tmp_path: Path, repo_root: Path) -> Path:
    shutil.copy(repo_root / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copytree(repo_root / "templates", tmp_path / "templates")
    shutil.copytree(repo_root / "dockerfiles", tmp_path / "dockerfiles")
    return tmp_path


def _registered_commands() -> list[str]:
    """Every command on the click group: a new one is covered without editing this test."""
    return cli.list_commands(click.Context(cli))


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _registered_commands()
    assert len(commands) >= 9, commands
    for command in commands:
        assert main([command, "--help"]) == 0, command
        out = capsys.readouterr().out
        assert out.startswith("Usage: orchestrator " + command + " "), (command, out[:200])
        help_text = cli.commands[command].help
        assert help_text and help_text.strip(), f"{command} has no help text"
        assert help_text.strip().split()[0] in out, command


def test_the_readme_lists_every_command(repo_root: Path) -> None:
    """README's CLI table (every command has --help) names exactly the registered ones."""
    readme = (repo_root / "README.md").read_text()
    table = readme.split("## The CLI", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z][a-z-]*)[ `]", table, re.MULTILINE)
    assert sorted(listed) == sorted(_registered_commands())


def test_plan_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--matrix",
            str(project / "matrix.yaml"),
            "plan",
            "--format",
            "json",
            "3.13.5-debian-*-amd64",
        ]
    )
    assert code == 0
    cells = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in cells] == ["3.13.5-debian-12-amd64", "3.13.5-debian-13-amd64"]
    assert cells[0]["archive"] == "python-3.13.5-debian-12-amd64.tar.zst"


def test_plan_unknown_selector(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--matrix", str(project / "matrix.yaml"), "plan", "2.7.*"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: '2.7.*' matches no cell") and err.count("\n") == 1


def test_render_check_then_edit(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = str(project / "matrix.yaml")
    assert main(["--matrix", matrix, "render", "--check"]) == 0
    dockerfile = project / "dockerfiles" / "debian-12" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("gcc", "clang"))
    capsys.readouterr()
    assert main(["--matrix", matrix, "render", "--check"]) == 3
    err = capsys.readouterr().err
    assert "dockerfiles/debian-12/Dockerfile" in err and err.count("\n") == 1
    assert main(["--matrix", matrix, "render"]) == 0
    assert main(["--matrix", matrix, "render", "--check"]) == 0


def test_malformed_matrix_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = project / "matrix.yaml"
    matrix.write_text(matrix.read_text().replace("arches: [amd64, arm64]", "arches: [amd64, mips]"))
    assert main(["--matrix", str(matrix), "plan"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "arches[1]" in err and "Traceback" not in err


def test_unknown_version(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--matrix", str(project / "matrix.yaml"), "fetch", "9.9.9"]) == 2
    assert "unknown version(s) 9.9.9" in capsys.readouterr().err


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--format", "xml"]) == 2
    assert "Invalid value" in capsys.readouterr().err
