from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from orchestrator.buildspec import INSTALL_PREFIX, build_spec, configure_args, recipe_digest
from orchestrator.errors import ConfigError
from orchestrator.fingerprint import fingerprint, fingerprint_inputs
from orchestrator.matrix import load_matrix


def test_release_recipe(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    spec = build_spec(matrix, matrix.cell("3.13.5-ubuntu-24.04-arm64"), "release")
    args = spec.configure_args
    assert args[0] == "--build=aarch64-linux-gnu"
    assert f"--prefix={INSTALL_PREFIX}" in args
    for flag in (
        "--enable-shared",
        "--without-static-libpython",
        "--enable-optimizations",
        "--with-lto",
        "--enable-option-checking=fatal",
        "--enable-loadable-sqlite-extensions",
        "--disable-test-modules",
        "--with-ensurepip=no",
    ):
        assert flag in args
    # Flags for make only: nothing that would leak into sysconfig is given to configure.
    assert not any(a.startswith(("CFLAGS", "LDFLAGS", "--with-system-expat")) for a in args)
    assert "-fno-semantic-interposition" not in " ".join(args)
    assert "--strip-all" in spec.ldflags


def test_fast_profile_has_no_pgo_or_lto(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    args = configure_args(matrix.cell("3.13.5-debian-12-amd64"), matrix.profile("fast")[1])
    assert "--enable-optimizations" not in args
    assert "--with-lto" not in args


def test_environment_and_spec_files(repo_root: Path, tmp_path: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    spec = build_spec(matrix, matrix.cell("3.13.5-debian-12-amd64"), "fast")
    env = spec.container_environment(
        source_path="/farm/source/x.tar.xz", jobs=3, source_date_epoch=1_749_000_000
    )
    assert env["SOURCE_DATE_EPOCH"] == "1749000000"
    assert env["FARM_JOBS"] == "3"
    assert env["FARM_BUILD_TYPE"] == "x86_64-linux-gnu"
    assert "PROFILE_TASK" not in env  # an empty PROFILE_TASK silently disables PGO
    spec.write_spec_files(tmp_path)
    assert (tmp_path / "configure-args").read_text().splitlines() == list(spec.configure_args)
    assert "ssl" in (tmp_path / "expected-modules").read_text().splitlines()
    assert json.loads((tmp_path / "footprint.json").read_text()) == {
        "sourceless": [],
        "ensurepip_wheels": True,
        "drop_unusable": False,
    }


def test_slim_differs_from_release_only_in_footprint(repo_root: Path, tmp_path: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    cell = matrix.cell("3.13.5-debian-12-amd64")
    release, slim = build_spec(matrix, cell, "release"), build_spec(matrix, cell, "slim")
    assert slim.configure_args == release.configure_args
    assert (slim.extra_cflags, slim.ldflags) == (release.extra_cflags, release.ldflags)
    footprint = slim.profile.footprint
    assert footprint.sourceless == ["encodings", "pydoc_data"]
    assert not footprint.ensurepip_wheels and footprint.drop_unusable
    slim.write_spec_files(tmp_path)
    assert json.loads((tmp_path / "footprint.json").read_text())["sourceless"] == [
        "encodings",
        "pydoc_data",
    ]
    # The footprint is part of the profile, so it is part of the fingerprint.
    base = {
        "recipe_version": 1,
        "dockerfile_sha256": "d" * 64,
        "base_image_id": "sha256:" + "b" * 64,
        "recipe_sha256": "r" * 64,
    }
    assert fingerprint(fingerprint_inputs(slim, **base)) != fingerprint(  # type: ignore[arg-type]
        fingerprint_inputs(release, **base)  # type: ignore[arg-type]
    )


def test_fingerprint_changes_with_each_input(repo_root: Path, tmp_path: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    spec = build_spec(matrix, matrix.cell("3.13.5-debian-12-amd64"), "fast")
    base = {
        "recipe_version": 1,
        "dockerfile_sha256": "d" * 64,
        "base_image_id": "sha256:" + "b" * 64,
        "recipe_sha256": "r" * 64,
    }
    reference = fingerprint(fingerprint_inputs(spec, **base))  # type: ignore[arg-type]
    assert reference == fingerprint(fingerprint_inputs(spec, **base))  # type: ignore[arg-type]
    for key in base:
        changed = dict(base, **{key: 2 if key == "recipe_version" else "x"})
        assert fingerprint(fingerprint_inputs(spec, **changed)) != reference  # type: ignore[arg-type]
    release = build_spec(matrix, spec.cell, "release")
    assert fingerprint(fingerprint_inputs(release, **base)) != reference  # type: ignore[arg-type]
    reworded = replace(spec, profile=spec.profile.model_copy(update={"description": "new words"}))
    assert fingerprint(fingerprint_inputs(reworded, **base)) == reference  # type: ignore[arg-type]


def test_recipe_digest_tracks_files(tmp_path: Path) -> None:
    (tmp_path / "build.sh").write_text("echo one\n")
    first = recipe_digest(tmp_path)
    (tmp_path / "build.sh").write_text("echo two\n")
    assert recipe_digest(tmp_path) != first


def test_pinned_size_is_not_a_build_input(repo_root: Path) -> None:
    """`size` only bounds a download: adding it to a pin must not rebuild anything."""
    matrix = load_matrix(repo_root / "matrix.yaml")
    spec = build_spec(matrix, matrix.cell("3.13.5-debian-12-amd64"), "fast")
    assert spec.cell.python.size is not None
    unsized = replace(
        spec, cell=replace(spec.cell, python=spec.cell.python.model_copy(update={"size": None}))
    )
    base = {
        "recipe_version": 1,
        "dockerfile_sha256": "d" * 64,
        "base_image_id": "sha256:" + "b" * 64,
        "recipe_sha256": "r" * 64,
    }
    sized_inputs = fingerprint_inputs(spec, **base)  # type: ignore[arg-type]
    assert sized_inputs == fingerprint_inputs(unsized, **base)  # type: ignore[arg-type]
    assert "size" not in json.dumps(sized_inputs)


def _with_prefixes(
    repo_root: Path, tmp_path: Path, *, stack: str | None, profile: str | None
) -> Path:
    """matrix.yaml with install_prefix set on debian-12 and/or the fast profile."""
    data = yaml.safe_load((repo_root / "matrix.yaml").read_text())
    if stack is not None:
        data["stacks"]["debian-12"]["install_prefix"] = stack
    if profile is not None:
        data["profiles"]["fast"]["install_prefix"] = profile
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_install_prefix_profile_wins_over_stack_over_default(
    repo_root: Path, tmp_path: Path
) -> None:
    def prefix_of(path: Path, cell: str, profile: str) -> tuple[str, str, str]:
        matrix = load_matrix(path)
        spec = build_spec(matrix, matrix.cell(cell), profile)
        env = spec.container_environment(source_path="/s", jobs=1, source_date_epoch=0)
        arg = next(a for a in spec.configure_args if a.startswith("--prefix="))
        return spec.install_prefix, arg, env["FARM_PREFIX"]

    heroku = "/app/.heroku/python"
    stack_only = _with_prefixes(repo_root, tmp_path, stack=heroku, profile=None)
    assert prefix_of(stack_only, "3.13.5-debian-12-amd64", "fast") == (
        heroku,
        f"--prefix={heroku}",
        heroku,
    )
    # Other stacks keep the default.
    assert prefix_of(stack_only, "3.13.5-debian-13-amd64", "fast")[0] == INSTALL_PREFIX
    both = _with_prefixes(repo_root, tmp_path, stack=heroku, profile="/srv/python")
    assert prefix_of(both, "3.13.5-debian-12-amd64", "fast")[0] == "/srv/python"
    assert prefix_of(both, "3.13.5-debian-12-amd64", "release")[0] == heroku


def test_install_prefix_changes_the_fingerprint(repo_root: Path, tmp_path: Path) -> None:
    default = load_matrix(repo_root / "matrix.yaml")
    moved = load_matrix(
        _with_prefixes(repo_root, tmp_path, stack="/app/.heroku/python", profile=None)
    )
    cell = "3.13.5-debian-12-amd64"
    inputs = [
        fingerprint_inputs(
            build_spec(m, m.cell(cell), "fast"),
            recipe_version=1,
            dockerfile_sha256="d",
            base_image_id="b",
            recipe_sha256="r",
        )
        for m in (default, moved)
    ]
    assert fingerprint(inputs[0]) != fingerprint(inputs[1])


@pytest.mark.parametrize(
    "bad", ["relative/path", "/", "/opt/../etc", "/opt/./py", "/opt/py/", "/opt/my py", "/opt/$(x)"]
)
def test_install_prefix_must_be_a_plain_absolute_path(
    repo_root: Path, tmp_path: Path, bad: str
) -> None:
    with pytest.raises(ConfigError, match="install_prefix"):
        load_matrix(_with_prefixes(repo_root, tmp_path, stack=None, profile=bad))


def test_the_options_the_recipe_sets_are_exactly_those_a_variant_may_not(repo_root: Path) -> None:
    # Finding 7 of issue 16: a variant's configure_args could override --prefix. A variant
    # may not set what the recipe sets; this keeps that list equal to what the recipe does.
    from orchestrator.matrix.schema import RECIPE_CONFIGURE_OPTIONS, configure_option

    matrix = load_matrix(repo_root / "matrix.yaml")
    seen: set[str] = set()
    for cell in matrix.cells():
        for profile in matrix.model.profiles:
            args = build_spec(matrix, cell, profile).configure_args
            recipe = args[: len(args) - len(cell.variant_args)]
            assert args[len(recipe) :] == cell.variant_args
            for arg in recipe:
                if arg.startswith(("--build=", "--prefix=")):  # never a variant's (no --X)
                    assert configure_option(arg) is None
                    continue
                option = configure_option(arg)
                assert option in RECIPE_CONFIGURE_OPTIONS, arg
                seen.add(option)
    assert seen == RECIPE_CONFIGURE_OPTIONS
