"""Findings 2, 5, 8 and part of 9 of the hostile-input review: values that would reach a
path, a shell line, make, a template or a URL are refused by validation, in one line, before
any of them is used. Each matrix goes through the CLI entry point, as a user's would."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.cli.main import main

REPO = Path(__file__).resolve().parents[2]
Mutation = Callable[[dict[str, Any]], None]


def _set(path: list[Any], value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _stack(field: str, value: Any) -> Mutation:
    return _set(["stacks", "debian-12", field], value)


def _rename_stack(name: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["stacks"][name] = data["stacks"].pop("debian-12")

    return mutate


HOSTILE: dict[str, tuple[Mutation, str]] = {
    # finding 2: filenames and directories that are paths
    "filename absolute": (_set(["pythons", 2, "filename"], "/etc/passwd"), "filename"),
    "filename climbs": (_set(["pythons", 2, "filename"], "../../../x.tgz"), "filename"),
    "filename other version": (_set(["pythons", 2, "filename"], "Python-3.9.0.tgz"), "filename"),
    "cache_dir root": (_set(["sources", "cache_dir"], "/"), "cache_dir"),
    "cache_dir system": (_set(["sources", "cache_dir"], "/etc/farm"), "cache_dir"),
    "cache_dir climbs": (_set(["sources", "cache_dir"], "../../x"), "cache_dir"),
    "local_dir climbs": (
        lambda d: d.setdefault("publish", {}).update(local_dir="../../srv"),
        "local_dir",
    ),
    "keys_dir system": (_set(["signatures", "keys_dir"], "/usr/share"), "keys_dir"),
    "file mirror device": (_set(["sources", "mirrors"], ["file:///dev/{filename}"]), "mirrors"),
    "file mirror climbs": (
        _set(["sources", "mirrors"], ["file://../../{filename}"]),
        "mirrors",
    ),
    "mirror attribute": (_set(["sources", "mirrors"], ["https://x/{version.nope}"]), "mirrors"),
    "mirror index": (_set(["sources", "mirrors"], ["https://x/{version[0]}"]), "mirrors"),
    "mirror conversion": (_set(["sources", "mirrors"], ["https://x/{version!r}"]), "mirrors"),
    "mirror whitespace": (_set(["sources", "mirrors"], ["https://x/ {filename}"]), "mirrors"),
    # finding 5: values rendered into Dockerfiles and shell lines
    "codename newline": (_stack("codename", "bookworm\nRUN touch /pwned"), "codename"),
    "base_image newline": (_stack("base_image", "debian:bookworm\nRUN id"), "base_image"),
    "base_image jinja": (_stack("base_image", "{{ 7*7 }}"), "base_image"),
    "package shell": (_stack("build_packages", ["gcc; touch /pwned"]), "build_packages"),
    "package jinja": (_stack("run_packages", ["{% raw %}x"]), "run_packages"),
    "conditional package": (
        _stack("run_packages", [{"name": "libssl3 && id", "python": ">=3.12"}]),
        "run_packages",
    ),
    "module name": (_set(["expected_modules"], ["os; import this"]), "expected_modules"),
    "cflags make call": (_set(["build_flags", "extra_cflags"], "$(shell id)"), "extra_cflags"),
    "ldflags quote": (_set(["build_flags", "ldflags"], "-Wl,-z,now '"), "ldflags"),
    "engine url": (_set(["engines"], {"arm64": "ssh://h; rm -rf /"}), "engines"),
    "runner label": (_set(["runners"], {"amd64": "ubuntu\n  evil: 1"}), "runners"),
    "profile name": (
        lambda d: d["profiles"].update({"../x": d["profiles"]["fast"]}),
        "profiles",
    ),
    "version shell": (_set(["pythons", 2, "version"], "3.13.5; rm -rf /"), "version"),
    "version 5000 digits": (_set(["pythons", 2, "version"], "3." + "9" * 5000 + ".0"), "version"),
    "stack climbs": (_rename_stack("../debian-12"), "stacks"),
    "stack jinja": (_rename_stack("{{x}}-12"), "stacks"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_matrix_values_are_refused_in_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mutate, field = HOSTILE[case]
    data = copy.deepcopy(yaml.safe_load((REPO / "matrix.yaml").read_text()))
    mutate(data)
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code = main(["--matrix", str(path), "plan"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert field in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("flag", "shown"),
    [
        ("--bucket=", "bucket ''"),
        ("--bucket=Not_A_Bucket", "bucket"),
        ("--prefix=../../x", "prefix"),
        ("--prefix=a/../b", "prefix"),
        ("--endpoint-url=not a url", "endpoint-url"),
    ],
)
def test_publish_targets_are_refused_not_changed(
    flag: str, shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Finding 8: `--bucket ''` must not quietly mean the local store, nor a prefix climb out.
    code = main(["--out", str(tmp_path), "publish", "3.13.5-debian-12-amd64", flag, "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and shown in err[0], err
    assert not (tmp_path / "publish").exists()


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "too-big"])
def test_unbounded_matrix_files_are_refused(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Finding 6: --matrix /dev/zero grew to 23 GB; a fifo hung.
    import os

    path = tmp_path / "matrix.yaml"
    if kind == "dev-zero":
        path = Path("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_text("# padding\n" * 200_000)
    code = main(["--matrix", str(path), "plan"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(path) in err[0], err


@pytest.mark.parametrize(
    "flags",
    [["--memory", "nan"], ["--memory", "inf"], ["--memory", "1e300"], ["--cpus", "nan"],
     ["--timeout", "nan"], ["--timeout", "-1"]],
)  # fmt: skip
def test_resource_flags_must_be_finite_and_bounded(
    flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Finding 9: `build --memory nan|inf|1e300` got past FloatRange into the engine call.
    code = main(["--out", str(tmp_path), "build", "3.13.5-debian-12-amd64", *flags])
    err = capsys.readouterr().err
    assert code == 2 and flags[0] in err and "Traceback" not in err, err
