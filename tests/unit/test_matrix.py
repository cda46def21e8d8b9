from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.version import Version

from orchestrator.errors import ConfigError, SelectionError
from orchestrator.matrix import Arch, load_matrix

MatrixWriter = Callable[[Callable[[dict[str, Any]], None]], Path]


@pytest.fixture
def real_data(repo_root: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((repo_root / "matrix.yaml").read_text())
    return data


@pytest.fixture
def write_matrix(tmp_path: Path, real_data: dict[str, Any]) -> MatrixWriter:
    def write(mutate: Callable[[dict[str, Any]], None]) -> Path:
        data = copy.deepcopy(real_data)
        mutate(data)
        path = tmp_path / "matrix.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


def test_real_matrix_cell_counts(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    every = matrix.cells()
    cells = [c for c in every if c.cpu_level is None]
    levels = [c for c in every if c.cpu_level is not None]
    versions = [p.version for p in matrix.model.pythons]
    for version in versions:
        # Free-threaded builds exist from 3.13 on (variants.freethreaded.python).
        variants = 2 if Version(version) >= Version("3.13") else 1
        ubuntu = [c for c in cells if c.version == version and c.stack.distro == "ubuntu"]
        debian = [c for c in cells if c.version == version and c.stack.distro == "debian"]
        # No 3.14+ on ubuntu-20.04 (libzstd too old for compression.zstd).
        excluded = 2 if Version(version) >= Version("3.14") else 0
        assert len(ubuntu) == (4 * 2 - excluded) * variants
        assert len(debian) == 2 * 2 * variants
        # v2, v3, v4 of every amd64 cell but ubuntu-20.04's (gcc 9 knows no x86-64-vN).
        mine = [c for c in levels if c.version == version]
        assert len(mine) == (3 + 2) * 3 * variants
    assert len(every) == len(cells) + len(levels)
    every_id = {c.id for c in every}
    assert len(every_id) == len(every) and len({c.archive_name for c in every}) == len(every)
    assert len({c.id for c in cells}) == len(cells)
    assert len({c.archive_name for c in cells}) == len(cells)


def test_cell_id_and_archive_name(repo_root: Path) -> None:
    cell = load_matrix(repo_root / "matrix.yaml").cell("3.13.5-ubuntu-24.04-arm64")
    assert cell.arch is Arch.ARM64
    assert cell.archive_name == "python-3.13.5-ubuntu-24.04-arm64.tar.zst"


def test_glob_selectors(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    ids = [c.id for c in matrix.select(["3.13.5-debian-*-amd64"])]
    assert ids == ["3.13.5-debian-12-amd64", "3.13.5-debian-13-amd64"]
    newest = [c.id for c in matrix.select(["3.13.*-debian-12-amd64"])]
    assert newest[0] == "3.13.5-debian-12-amd64" and len(newest) >= 2  # versions ascend
    # Overlapping selectors do not duplicate cells.
    assert len(matrix.select(["*-debian-12-*", "3.13.5-debian-12-amd64"])) == len(
        matrix.select(["*-debian-12-*"])
    )
    with pytest.raises(SelectionError, match="matches no cell"):
        matrix.select(["2.7.*"])


def test_base_image_per_arch(repo_root: Path) -> None:
    stack = load_matrix(repo_root / "matrix.yaml").model.stacks["debian-12"]
    assert stack.image_for(Arch.AMD64) == "amd64/debian:bookworm"
    assert stack.image_for(Arch.ARM64) == "arm64v8/debian:bookworm"
    namespaced = stack.model_copy(update={"base_image": "mycorp/debian:bookworm"})
    assert namespaced.image_for(Arch.ARM64) == "mycorp/debian:bookworm"
    overridden = stack.model_copy(update={"base_image_per_arch": {Arch.ARM64: "local-arm:1"}})
    assert overridden.image_for(Arch.ARM64) == "local-arm:1"


def test_versioned_packages_and_modules(repo_root: Path) -> None:
    from packaging.version import Version

    matrix = load_matrix(repo_root / "matrix.yaml")
    stack = matrix.model.stacks["debian-12"]
    assert "libzstd-dev" in stack.build_packages_for([Version("3.14.0")])
    assert "libzstd-dev" not in stack.build_packages_for([Version("3.13.5")])
    assert "libcrypt-dev" in stack.build_packages_for([Version("3.12.11")])
    assert "compression.zstd" in matrix.expected_modules(Version("3.14.0"))
    assert "crypt" in matrix.expected_modules(Version("3.12.11"))
    assert "crypt" not in matrix.expected_modules(Version("3.13.5"))


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_set(["stacks", "debian-12", "distroo"], "x"), r"stacks\.debian-12\.distroo: unknown key"),
        (_set(["pythons", 0, "version"], "3.13"), r"pythons\[0\]\.version: bad version '3\.13'"),
        (_set(["pythons", 1, "sha256"], "abc"), r"pythons\[1\]\.sha256: expected a sha256"),
        (
            lambda d: d["pythons"][2].pop("sha256"),
            r"pythons\[2\]\.sha256: required key is missing",
        ),
        (
            lambda d: d["excludes"].append({"stack": "ubuntu-18.04"}),
            r"excludes\[2\]\.stack: 'ubuntu-18.04' matches no stack",
        ),
        (
            lambda d: d["excludes"].append({"arch": "s390x"}),
            r"excludes\[2\]\.arch: 's390x' matches no arch",
        ),
        (
            lambda d: d["pythons"].append(dict(d["pythons"][0])),
            r"version 3\.11\.2 is listed twice",
        ),
        (_set(["arches"], ["amd64", "riscv"]), r"arches\[1\]: Input should be 'amd64' or 'arm64'"),
        (_set(["default_profile"], "turbo"), r"default_profile 'turbo' is not one of"),
        (_set(["sources", "mirrors"], ["ftp://x/{version}"]), r"must start with https://"),
        (_set(["sources", "mirrors"], ["https://x/{vers}"]), r"is not one of"),
        (
            _set(["profiles", "slim", "footprint", "strip_docs"], True),
            r"profiles\.slim\.footprint\.strip_docs: unknown key",
        ),
        (
            _set(["profiles", "slim", "footprint", "sourceless"], ["encodings", "encodings"]),
            r"profiles\.slim\.footprint\.sourceless: .*listed more than once: encodings",
        ),
        (
            _set(["profiles", "slim", "footprint", "sourceless"], ["../lib"]),
            r"profiles\.slim\.footprint\.sourceless: .*'\.\./lib' is not a module name",
        ),
    ],
)
def test_bad_matrix_gives_one_clear_line(
    write_matrix: MatrixWriter, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    path = write_matrix(mutate)
    with pytest.raises(ConfigError, match=expected) as info:
        load_matrix(path)
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert "\n" not in message


def test_error_names_the_line(tmp_path: Path, repo_root: Path) -> None:
    text = (repo_root / "matrix.yaml").read_text()
    broken = text.replace('  - version: "3.12.11"', '  - version: "3.12.x"')
    assert broken != text
    path = tmp_path / "matrix.yaml"
    path.write_text(broken)
    line = next(i for i, t in enumerate(broken.splitlines(), 1) if '"3.12.x"' in t)
    with pytest.raises(ConfigError, match=rf"matrix\.yaml:{line}: pythons\[1\]\.version"):
        load_matrix(path)


def test_duplicate_yaml_key_is_rejected(tmp_path: Path, repo_root: Path) -> None:
    text = (repo_root / "matrix.yaml").read_text()
    path = tmp_path / "matrix.yaml"
    path.write_text(text.replace("  debian-13:\n", "  debian-12:\n"))
    with pytest.raises(ConfigError, match="duplicate key 'debian-12'"):
        load_matrix(path)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "matrix.yaml"
    path.write_text("pythons: [\n")
    with pytest.raises(ConfigError, match=r"matrix\.yaml:\d+: invalid YAML"):
        load_matrix(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_matrix(tmp_path / "absent.yaml")
