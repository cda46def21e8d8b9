"""The `jit` profile option: which cells get the experimental JIT, refusals, configure
arguments, builder packages, fingerprints and the verification stage it adds."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.buildspec import build_spec, configure_args
from orchestrator.errors import ConfigError
from orchestrator.fingerprint import fingerprint_inputs
from orchestrator.jit import CONFIGURE_ARG, REQUIRED_LLVM, builder_packages, jit_enabled, refusal
from orchestrator.matrix import Matrix, load_matrix
from orchestrator.publish.manifests import manifest_entry
from orchestrator.render import render_stack
from orchestrator.verify.runtime import jit_built, parse_script_output


def _matrix(tmp_path: Path, repo_root: Path, edit: Any = None) -> Matrix:
    """The shipped matrix, optionally edited (a function of the parsed YAML), in tmp_path."""
    data = yaml.safe_load((repo_root / "matrix.yaml").read_text())
    if edit is not None:
        edit(data)
    (tmp_path / "matrix.yaml").write_text(yaml.safe_dump(data))
    for name in ("templates", "keys"):
        shutil.copytree(repo_root / name, tmp_path / name)
    return load_matrix(tmp_path / "matrix.yaml")


def _set_jit(value: object, profile: str = "fast") -> Any:
    def edit(data: dict[str, Any]) -> None:
        data["profiles"][profile]["jit"] = value

    return edit


def test_shipped_matrix_release_is_auto_and_fast_is_off(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    assert matrix.model.profiles["release"].jit == "auto"
    assert matrix.model.profiles["fast"].jit is False
    assert matrix.model.stacks["debian-13"].llvm == [17, 18, 19, 22]
    assert matrix.model.stacks["debian-12"].llvm == []


def test_release_gets_the_jit_only_where_the_stack_has_the_llvm(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    on = build_spec(matrix, matrix.cell("3.13.5-debian-13-amd64"), "release")
    assert on.jit and on.configure_args[-1] == CONFIGURE_ARG
    for cell_id in (
        "3.13.5-debian-12-amd64",  # bookworm: no LLVM 18 listed
        "3.12.11-debian-13-amd64",  # before 3.13
        "3.15.2-debian-13-amd64",  # no LLVM major on record for 3.15
        "3.13.5-ubuntu-24.04-amd64",  # Ubuntu archives not checked
    ):
        spec = build_spec(matrix, matrix.cell(cell_id), "release")
        assert not spec.jit, cell_id
        assert not any("experimental-jit" in arg for arg in spec.configure_args), cell_id
    fast = build_spec(matrix, matrix.cell("3.13.5-debian-13-amd64"), "fast")
    assert not fast.jit and CONFIGURE_ARG not in fast.configure_args


def test_free_threaded_cells_never_get_the_jit(tmp_path: Path, repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    cell = matrix.cell("3.13.5t-debian-13-amd64")
    spec = build_spec(matrix, cell, "release")
    assert not spec.jit and CONFIGURE_ARG not in spec.configure_args
    assert "--disable-gil" in spec.configure_args
    strict = _matrix(tmp_path, repo_root, _set_jit(True))
    with pytest.raises(ConfigError, match="free-threaded build does not run the JIT"):
        build_spec(strict, strict.cell("3.13.5t-debian-13-amd64"), "fast")


def test_configure_arg_is_yes_off(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    cell = matrix.cell("3.14.10-debian-13-arm64")
    profile = matrix.profile("fast")[1]
    assert configure_args(cell, profile, jit=True) == (
        *configure_args(cell, profile),
        "--enable-experimental-jit=yes-off",
    )


@pytest.mark.parametrize(
    ("cell_id", "expected"),
    [
        ("3.13.5-debian-12-amd64", "3.13's JIT needs LLVM 18, stacks.debian-12.llvm lists none"),
        ("3.11.2-debian-13-amd64", "CPython 3.11.2 has no JIT (it came with 3.13)"),
        ("3.15.2-debian-13-amd64", "no LLVM major is on record for 3.15's JIT"),
    ],
)
def test_jit_true_refuses_in_one_line(
    tmp_path: Path, repo_root: Path, cell_id: str, expected: str
) -> None:
    matrix = _matrix(tmp_path, repo_root, _set_jit(True))
    with pytest.raises(ConfigError) as caught:
        build_spec(matrix, matrix.cell(cell_id), "fast")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"profile 'fast' has jit: true, but {cell_id} cannot have the JIT")
    assert expected in message


def test_jit_true_builds_where_allowed(tmp_path: Path, repo_root: Path) -> None:
    matrix = _matrix(tmp_path, repo_root, _set_jit(True))
    spec = build_spec(matrix, matrix.cell("3.13.5-debian-13-amd64"), "fast")
    assert spec.jit and CONFIGURE_ARG in spec.configure_args


def test_llvm_listed_but_not_the_needed_one(tmp_path: Path, repo_root: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["stacks"]["debian-13"]["llvm"] = [17, 19]

    matrix = _matrix(tmp_path, repo_root, edit)
    cell = matrix.cell("3.13.5-debian-13-amd64")
    assert refusal(cell) == "3.13's JIT needs LLVM 18, stacks.debian-13.llvm lists 17, 19"
    assert refusal(matrix.cell("3.14.10-debian-13-amd64")) is None
    assert not jit_enabled(cell, "release", matrix.profile("release")[1])


@pytest.mark.parametrize("value", ["maybe", 2, "on"])
def test_bad_jit_value_is_refused(tmp_path: Path, repo_root: Path, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        _matrix(tmp_path, repo_root, _set_jit(value))
    assert "jit" in str(caught.value)


@pytest.mark.parametrize("llvm", [[18, 18], [0], "18"])
def test_bad_llvm_lists_are_refused(tmp_path: Path, repo_root: Path, llvm: object) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["stacks"]["debian-13"]["llvm"] = llvm

    with pytest.raises(ConfigError) as caught:
        _matrix(tmp_path, repo_root, edit)
    assert "llvm" in str(caught.value)


def test_required_llvm_table() -> None:
    # From upstream's Tools/jit/_llvm.py and README.md of each minor (orchestrator/jit.py).
    assert REQUIRED_LLVM == {(3, 13): 18, (3, 14): 19}


def test_builder_packages_follow_stack_versions_and_profiles(
    tmp_path: Path, repo_root: Path
) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    assert builder_packages(matrix, "debian-13") == [
        "clang-18", "llvm-18", "clang-19", "llvm-19", "python3",
    ]  # fmt: skip
    for stack in ("debian-12", "ubuntu-24.04", "ubuntu-20.04"):
        assert builder_packages(matrix, stack) == [], stack
    off = _matrix(tmp_path, repo_root, _set_jit(False, "release"))
    assert builder_packages(off, "debian-13") == []


def test_rendered_builder_gets_llvm_only_on_stacks_that_list_it(
    tmp_path: Path, repo_root: Path
) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    trixie = render_stack(matrix, "debian-13")
    builder = trixie.split("FROM run AS builder", 1)[1].split("FROM builder AS consumer", 1)[0]
    for package in ("clang-18", "llvm-18", "clang-19", "llvm-19", "python3"):
        assert f"        {package} \\\n" in builder, package
    run = trixie.split("FROM run AS builder", 1)[0]
    assert "clang" not in run  # the run image stays without compilers
    for stack in ("debian-12", "ubuntu-24.04"):
        assert "clang" not in render_stack(matrix, stack), stack
    # With no profile asking for the JIT, debian-13's Dockerfile is what it was before it.
    off = _matrix(tmp_path, repo_root, _set_jit(False, "release"))
    (tmp_path / "dockerfiles").mkdir()
    assert "clang" not in render_stack(off, "debian-13")
    assert "experimental JIT" not in render_stack(off, "debian-13")


def test_fingerprint_of_a_cell_without_the_jit_does_not_mention_it(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")

    def inputs(cell_id: str, profile: str) -> dict[str, Any]:
        spec = build_spec(matrix, matrix.cell(cell_id), profile)
        return fingerprint_inputs(
            spec, recipe_version=1, dockerfile_sha256="d", base_image_id="b", recipe_sha256="r"
        )

    for profile in ("fast", "release"):
        plain = inputs("3.13.5-debian-12-amd64", profile)
        assert "jit" not in plain and "jit" not in plain["profile"]
        assert not any("jit" in arg for arg in plain["configure_args"])
    jit = inputs("3.13.5-debian-13-amd64", "release")
    assert jit["jit"] is True and CONFIGURE_ARG in jit["configure_args"]


def test_manifest_entry_names_the_jit_only_when_built_with_it() -> None:
    record: dict[str, Any] = {
        "name": "python-3.13.5-debian-13-amd64.tar.zst", "version": "3.13.5",
        "stack": "debian-13", "distro": "debian", "distro_version": "13", "arch": "amd64",
        "profile": "release", "sha256": "0" * 64, "size": 1, "built_at": "2026-11-30T15:00:00Z",
        "source": {"filename": "Python-3.13.5.tar.xz", "sha256": "1" * 64, "verification": {}},
    }  # fmt: skip

    def entry(**extra: Any) -> dict[str, Any]:
        return manifest_entry(
            record | extra, url="u", metadata_url="m", sbom_url="s", published_at="t"
        )

    assert "jit" not in entry() and "jit" not in entry(jit=False)
    assert entry(jit=True)["jit"] is True


def test_jit_stage_only_for_records_that_say_so() -> None:
    assert jit_built({"jit": True})
    assert not jit_built({"jit": False})
    assert not jit_built({})  # records from before the option
    assert not jit_built({"jit": "true"})


def test_jit_checks_are_named_apart_from_the_runtime_stage() -> None:
    output = parse_script_output(
        "CHECK jit:off ok PYTHON_JIT=(unset): 0 executor(s), 0 with machine code\n"
        "CHECK jit:on ok PYTHON_JIT=1: 1 executor(s), 1 with machine code\n"
        "CHECK jit:import:ssl ok /x/ssl.py\n"
        "DONE jit\n"
    )
    assert [c.name for c in output.checks] == ["jit:off", "jit:on", "jit:import:ssl"]
    assert output.done
