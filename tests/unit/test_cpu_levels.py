"""CPU levels (matrix.yaml `cpu_levels`): amd64 runtimes built again for x86-64-v2/v3/v4.

What a level cell is called, what it renders (make flags), what it records (fingerprint inputs,
record, manifest, uv's key and arch variant), how selectors pick it, and that the baseline
cells' ids, names, configure arguments and fingerprint inputs stay exactly what they were.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.buildspec import build_spec
from orchestrator.errors import ConfigError, PublishError, SelectionError
from orchestrator.fingerprint import fingerprint, fingerprint_inputs
from orchestrator.matrix import CpuLevel, load_matrix
from orchestrator.publish.manifests import manifest_entry, uv_entry, uv_key, uv_metadata_key
from orchestrator.publish.publisher import Publisher, check_published, load_artifact
from orchestrator.publish.record import validate_record
from orchestrator.publish.store import DirectoryStore
from orchestrator.verify.required import CORE, PIP
from tests.publish_support import make_artifact, store_write

BASE = {
    "recipe_version": 1,
    "dockerfile_sha256": "d" * 64,
    "base_image_id": "sha256:" + "b" * 64,
    "recipe_sha256": "r" * 64,
}
# The keys of a baseline cell's fingerprint inputs before CPU levels existed (main at 59eeec7).
BASELINE_KEYS = {
    "recipe_version", "python_version", "source_sha256", "stack", "arch", "dockerfile_sha256",
    "base_image_id", "recipe_sha256", "profile", "configure_args", "extra_cflags", "ldflags",
    "expected_modules",
}  # fmt: skip
# The fingerprint of 3.13.5-debian-12-amd64 (fast) for BASE's inputs, computed on main at
# 59eeec7 before CPU levels existed: equal, so no published baseline runtime reads as changed.
BASELINE_FINGERPRINT = "65db14aee1a9b38c11efaefff91b70cde8d87c9d0fe4dabb3b4a106333ffa5ed"

Mutate = Callable[[dict[str, Any]], None]


@pytest.fixture
def matrix_writer(tmp_path: Path, repo_root: Path) -> Callable[[Mutate], Path]:
    real = yaml.safe_load((repo_root / "matrix.yaml").read_text())

    def write(mutate: Mutate) -> Path:
        data = copy.deepcopy(real)
        mutate(data)
        path = tmp_path / "matrix.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


# --- names -------------------------------------------------------------------------------


def test_level_cell_names(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    cell = matrix.cell("3.13.5-debian-12-amd64v3")
    assert cell.cpu_level is CpuLevel.V3 and cell.arch.value == "amd64"
    assert cell.arch_label == "amd64v3" and cell.baseline_id == "3.13.5-debian-12-amd64"
    assert cell.archive_name == "python-3.13.5-debian-12-amd64v3.tar.zst"
    free = matrix.cell("3.13.5t-debian-12-amd64v4")
    assert free.archive_name == "python-3.13.5t-debian-12-amd64v4.tar.zst"
    assert free.ldversion == "3.13t"
    baseline = matrix.cell("3.13.5-debian-12-amd64")
    assert baseline.cpu_level is None and baseline.arch_label == "amd64"
    assert baseline.archive_name == "python-3.13.5-debian-12-amd64.tar.zst"


def test_levels_are_amd64_only_and_follow_their_baseline_cell(repo_root: Path) -> None:
    cells = load_matrix(repo_root / "matrix.yaml").cells()
    levels = [c for c in cells if c.cpu_level is not None]
    assert levels and all(c.arch.value == "amd64" for c in levels)
    ids = [c.id for c in cells]
    # Every level cell has its baseline twin, right before its levels.
    at = ids.index("3.13.5-debian-12-amd64")
    assert ids[at : at + 4] == [
        "3.13.5-debian-12-amd64",
        "3.13.5-debian-12-amd64v2",
        "3.13.5-debian-12-amd64v3",
        "3.13.5-debian-12-amd64v4",
    ]
    assert all(c.baseline_id in ids for c in levels)
    # focal's gcc 9 has no -march=x86-64-vN: no level cells there (the exclude says why).
    assert not [c for c in levels if c.stack_name == "ubuntu-20.04"]
    assert [c for c in cells if c.id == "3.13.5-ubuntu-20.04-amd64"]


def test_level_properties() -> None:
    assert [level.march for level in CpuLevel] == ["x86-64-v2", "x86-64-v3", "x86-64-v4"]
    assert CpuLevel.V3.cflags == "-march=x86-64-v3"
    assert CpuLevel.V3.ldflags == "-Wl,-z,x86-64-v3"
    # GNU_PROPERTY_X86_ISA_1_V2/V3/V4 (binutils include/elf/common.h): 1<<1, 1<<2, 1<<3.
    assert [level.isa_bit for level in CpuLevel] == [2, 4, 8]
    # Cumulative: v4 needs v3's and v2's features too.
    assert set(CpuLevel.V2.cpu_flags) < set(CpuLevel.V3.cpu_flags) < set(CpuLevel.V4.cpu_flags)
    assert {"avx2", "bmi2", "fma", "movbe"} <= set(CpuLevel.V3.cpu_flags)
    assert "avx512f" not in CpuLevel.V3.cpu_flags and "avx512vl" in CpuLevel.V4.cpu_flags


# --- selection: off by default in the nightly ------------------------------------------------


def test_no_selector_leaves_level_cells_out(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    default = matrix.select([])
    assert default and all(c.cpu_level is None for c in default)
    assert len(default) == len([c for c in matrix.cells() if c.cpu_level is None])


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        # Selectors that do not name a level keep meaning what they meant before levels.
        ("3.13.5-debian-12-*", ["3.13.5-debian-12-amd64", "3.13.5-debian-12-arm64"]),
        ("3.13.5-debian-12-amd64*", ["3.13.5-debian-12-amd64"]),
        ("*", None),
        # A selector that names the level takes it.
        ("3.13.5-debian-12-amd64v3", ["3.13.5-debian-12-amd64v3"]),
        (
            "3.13.5*-debian-12-amd64v*",
            [
                "3.13.5-debian-12-amd64v2",
                "3.13.5-debian-12-amd64v3",
                "3.13.5-debian-12-amd64v4",
                "3.13.5t-debian-12-amd64v2",
                "3.13.5t-debian-12-amd64v3",
                "3.13.5t-debian-12-amd64v4",
            ],
        ),
    ],
)
def test_selectors_take_a_level_only_when_they_name_it(
    repo_root: Path, selector: str, expected: list[str] | None
) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    chosen = [c.id for c in matrix.select([selector])]
    if expected is None:
        assert chosen == [c.id for c in matrix.select([])]
    else:
        assert chosen == expected


def test_selector_naming_an_excluded_level_is_an_error(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    with pytest.raises(SelectionError, match="matches no cell"):
        matrix.select(["3.13.5-ubuntu-20.04-amd64v3"])


def test_nightly_true_puts_levels_in_every_selection(
    matrix_writer: Callable[[Mutate], Path],
) -> None:
    path = matrix_writer(lambda d: d["cpu_levels"].__setitem__("nightly", True))
    matrix = load_matrix(path)
    assert len(matrix.select([])) == len(matrix.cells())
    assert [c.id for c in matrix.select(["3.13.5-debian-12-amd64*"])] == [
        "3.13.5-debian-12-amd64",
        "3.13.5-debian-12-amd64v2",
        "3.13.5-debian-12-amd64v3",
        "3.13.5-debian-12-amd64v4",
    ]


def test_matrix_without_cpu_levels_has_no_level_cells(
    matrix_writer: Callable[[Mutate], Path],
) -> None:
    def drop(data: dict[str, Any]) -> None:
        data.pop("cpu_levels")
        data["excludes"] = [e for e in data["excludes"] if "cpu_level" not in e]

    matrix = load_matrix(matrix_writer(drop))
    assert matrix.cells() == matrix.select([])
    assert all(c.cpu_level is None for c in matrix.cells())


def test_cpu_levels_python_specifier_limits_the_versions(
    matrix_writer: Callable[[Mutate], Path],
) -> None:
    matrix = load_matrix(
        matrix_writer(lambda d: d["cpu_levels"].update(python=">=3.13", levels=["v3"]))
    )
    levels = [c for c in matrix.cells() if c.cpu_level is not None]
    assert levels and {c.cpu_level for c in levels} == {CpuLevel.V3}
    assert all(c.python.parsed.release[:2] >= (3, 13) for c in levels)


def _exclude(**fields: str) -> Mutate:
    return lambda d: d["excludes"].append(fields)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["cpu_levels"].__setitem__("levels", ["v3", "v5"]),
            r"cpu_levels.levels\[1\]: Input should be 'v2', 'v3' or 'v4'",
        ),
        (
            lambda d: d["cpu_levels"].__setitem__("levels", ["v3", "v3"]),
            r"cpu_levels.levels: .*a level is listed twice",
        ),
        (lambda d: d["cpu_levels"].__setitem__("levels", []), r"cpu_levels.levels: .*at least 1"),
        (
            lambda d: d["cpu_levels"].__setitem__("nightly", "no"),
            r"cpu_levels.nightly: .*valid boolean",
        ),
        (lambda d: d["cpu_levels"].__setitem__("arch", "arm64"), r"cpu_levels.arch: unknown key"),
        (
            lambda d: d.__setitem__("arches", ["arm64"]),
            r"cpu_levels: x86-64 levels apply to amd64 cells only, and arches has no amd64",
        ),
        (_exclude(cpu_level="v5"), r"excludes\[2\].cpu_level: 'v5' matches no cpu_level"),
        (
            _exclude(stack="ubuntu-20.04", cpu_level="v3"),
            r"excludes\[2\]: cpu_level 'v3' is excluded twice: excludes\[1\] already",
        ),
        (
            _exclude(arch="arm64", cpu_level="v3"),
            r"excludes\[2\]: names no cell: cpu_level 'v3' has none for python '\*', stack '\*', "
            r"arch 'arm64'",
        ),
    ],
)
def test_malformed_cpu_levels_give_one_clear_line(
    matrix_writer: Callable[[Mutate], Path], mutate: Mutate, expected: str
) -> None:
    path = matrix_writer(mutate)
    with pytest.raises(ConfigError, match=expected) as info:
        load_matrix(path)
    assert str(info.value).startswith(f"{path}:") and "\n" not in str(info.value)


def test_exclude_can_name_a_level(matrix_writer: Callable[[Mutate], Path]) -> None:
    matrix = load_matrix(matrix_writer(_exclude(stack="debian-13", cpu_level="v4")))
    debian13 = {c.cpu_level for c in matrix.cells() if c.stack_name == "debian-13"}
    assert debian13 == {None, CpuLevel.V2, CpuLevel.V3}
    # An exclude without cpu_level removes the level cells with their baseline.
    matrix = load_matrix(matrix_writer(_exclude(stack="debian-13", python="3.13.5")))
    assert not [c for c in matrix.cells() if c.stack_name == "debian-13" and c.version == "3.13.5"]


# --- what a level cell renders and records -------------------------------------------------


def test_make_flags_add_march_and_the_isa_marker(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    flags = matrix.model.build_flags
    baseline = build_spec(matrix, matrix.cell("3.13.5-debian-12-amd64"), "fast")
    assert (baseline.extra_cflags, baseline.ldflags) == (flags.extra_cflags, flags.ldflags)
    for level in CpuLevel:
        spec = build_spec(matrix, matrix.cell(f"3.13.5-debian-12-amd64{level.value}"), "fast")
        assert spec.extra_cflags == f"{flags.extra_cflags} -march=x86-64-{level.value}"
        assert spec.ldflags == f"{flags.ldflags} -Wl,-z,x86-64-{level.value}"
        # Configure never sees them: they stay out of sysconfig (users' extensions).
        assert spec.configure_args == baseline.configure_args
        assert not [a for a in spec.configure_args if "march" in a or "x86-64" in a]
        environment = spec.container_environment(source_path="/s", jobs=2, source_date_epoch=1)
        assert environment["FARM_EXTRA_CFLAGS"] == spec.extra_cflags
        assert environment["FARM_LDFLAGS"] == spec.ldflags


def test_baseline_fingerprint_inputs_are_unchanged(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    baseline = build_spec(matrix, matrix.cell("3.13.5-debian-12-amd64"), "fast")
    inputs = fingerprint_inputs(baseline, **BASE)  # type: ignore[arg-type]
    assert set(inputs) == BASELINE_KEYS
    assert fingerprint(inputs) == BASELINE_FINGERPRINT
    level = build_spec(matrix, matrix.cell("3.13.5-debian-12-amd64v3"), "fast")
    level_inputs = fingerprint_inputs(level, **BASE)  # type: ignore[arg-type]
    assert set(level_inputs) == BASELINE_KEYS | {"cpu_level"}
    assert level_inputs["cpu_level"] == "v3" and level_inputs["arch"] == "amd64"
    assert fingerprint(level_inputs) != fingerprint(inputs)
    v4 = fingerprint_inputs(
        build_spec(matrix, matrix.cell("3.13.5-debian-12-amd64v4"), "fast"),
        **BASE,  # type: ignore[arg-type]
    )
    assert fingerprint(v4) != fingerprint(level_inputs)


def test_plan_json_names_the_level(repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli.main import main

    matrix = str(repo_root / "matrix.yaml")
    assert main(["--matrix", matrix, "plan", "--format", "json", "3.13.5-debian-12-amd64*"]) == 0
    assert [c["cpu_level"] for c in json.loads(capsys.readouterr().out)] == [None]
    assert main(["--matrix", matrix, "plan", "--format", "github-matrix", "*-amd64v3"]) == 0
    include = json.loads(capsys.readouterr().out)["include"]
    assert include and all(e["cpu_level"] == "v3" and e["arch"] == "amd64" for e in include)
    assert all(e["cell"].endswith("-amd64v3") and e["runner"] == "ubuntu-24.04" for e in include)
    assert all(e["archive"].endswith("-amd64v3.tar.zst") for e in include)


# --- publishing: the record, manifest.json and uv's download metadata -----------------------


def _record(level: str | None, variant: str = "default") -> dict[str, Any]:
    t = "t" if variant == "freethreaded" else ""
    return {
        "name": f"python-3.13.5{t}-debian-12-amd64{level or ''}.tar.zst",
        "version": "3.13.5",
        "variant": variant,
        "cpu_level": level,
        "major": 3,
        "minor": 13,
        "patch": 5,
        "prerelease": "",
        "arch": "amd64",
        "sha256": "a" * 64,
        "built_at": "2026-11-30T15:00:00Z",
    }


def test_uv_key_and_arch_use_uvs_spelling() -> None:
    # uv: JsonArch {family, variant} (crates/uv-python/src/downloads.rs), joined as
    # `x86_64_v3` and parsed by Arch::from_str / ArchVariant::from_str (crates/uv-platform).
    v3 = _record("v3")
    assert uv_key(v3) == "cpython-3.13.5-linux-x86_64_v3-gnu"
    assert uv_entry(v3, url="u", sbom_url="s")["arch"] == {"family": "x86_64", "variant": "v3"}
    assert uv_entry(v3, url="u", sbom_url="s")["variant"] is None
    free = _record("v4", "freethreaded")
    assert uv_key(free) == "cpython-3.13.5+freethreaded-linux-x86_64_v4-gnu"
    assert uv_entry(free, url="u", sbom_url="s")["variant"] == "freethreaded"
    baseline = _record(None)
    assert uv_key(baseline) == "cpython-3.13.5-linux-x86_64-gnu"
    assert uv_entry(baseline, url="u", sbom_url="s")["arch"] == {
        "family": "x86_64",
        "variant": None,
    }
    # A record from before CPU levels is a baseline runtime.
    old = {k: v for k, v in baseline.items() if k != "cpu_level"}
    assert uv_key(old) == "cpython-3.13.5-linux-x86_64-gnu"
    with pytest.raises(PublishError, match="cpu_level 'v5' on arch 'amd64' has no uv spelling"):
        uv_key(_record("v5"))
    with pytest.raises(PublishError, match="on arch 'arm64' has no uv spelling"):
        uv_key({**v3, "arch": "arm64"})


def test_manifest_entry_names_the_level_only_when_there_is_one() -> None:
    extra = {
        "stack": "debian-12",
        "distro": "debian",
        "distro_version": "12",
        "profile": "fast",
        "size": 1,
        "source": {"filename": "Python-3.13.5.tar.xz", "sha256": "b" * 64},
    }
    level = manifest_entry({**_record("v3"), **extra}, url="u", metadata_url="m", sbom_url="s",
                           published_at="t")  # fmt: skip
    assert level["cpu_level"] == "v3" and level["arch"] == "amd64"
    baseline = manifest_entry({**_record(None), **extra}, url="u", metadata_url="m",
                              sbom_url="s", published_at="t")  # fmt: skip
    assert "cpu_level" not in baseline


def test_publishing_a_level_beside_the_baseline_lists_both(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    baseline = make_artifact(artifacts, content=b"baseline runtime")
    v3 = make_artifact(artifacts, content=b"x86-64-v3 runtime", cpu_level="v3")
    assert v3 == "python-3.13.5-debian-12-amd64v3.tar.zst"
    store = DirectoryStore(tmp_path / "store")
    publisher = Publisher(store, prefix="", progress=lambda _line: None)
    for name in (baseline, v3):
        publisher.publish(load_artifact(artifacts, name))
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert {(r["name"], r.get("cpu_level")) for r in manifest["runtimes"]} == {
        (baseline, None),
        (v3, "v3"),
    }
    # One uv document per stack and arch: the level's entry sits beside the baseline's, so
    # a key request finds it and a plain one still finds the baseline (docs/MANIFESTS.md).
    key = uv_metadata_key("", "debian-12", "amd64")
    assert key == "debian-12/amd64/download-metadata.json"
    uv = json.loads(store.get(key)[0])  # type: ignore[index]
    assert sorted(uv) == ["cpython-3.13.5-linux-x86_64-gnu", "cpython-3.13.5-linux-x86_64_v3-gnu"]
    assert uv["cpython-3.13.5-linux-x86_64_v3-gnu"]["url"].endswith(v3)
    assert uv["cpython-3.13.5-linux-x86_64_v3-gnu"]["arch"] == {"family": "x86_64", "variant": "v3"}
    assert uv["cpython-3.13.5-linux-x86_64-gnu"]["arch"] == {"family": "x86_64", "variant": None}
    assert check_published(store, "", [baseline, v3]) == []
    # check-manifest looks up the level's own key: a wrong sha256 there is named.
    uv["cpython-3.13.5-linux-x86_64_v3-gnu"]["sha256"] = "0" * 64
    store_write(store, key, json.dumps(uv).encode())
    problems = check_published(store, "", [baseline, v3])
    assert len(problems) == 1 and problems[0].startswith(v3), problems
    assert "cpython-3.13.5-linux-x86_64_v3-gnu with another sha256" in problems[0]


def test_a_damaged_cpu_level_in_the_manifest_is_named(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    v3 = make_artifact(artifacts, cpu_level="v3")
    store = DirectoryStore(tmp_path / "store")
    Publisher(store, prefix="", progress=lambda _line: None).publish(load_artifact(artifacts, v3))
    path = tmp_path / "store" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["runtimes"][0]["cpu_level"] = "v9"
    store_write(store, "manifest.json", json.dumps(manifest).encode())
    [problem] = check_published(store, "", [v3])
    assert "cpu_level: Input should be 'v2', 'v3' or 'v4'" in problem


def test_record_must_agree_with_its_level(tmp_path: Path) -> None:
    name = make_artifact(tmp_path, cpu_level="v3")
    raw = json.loads((tmp_path / name.replace(".tar.zst", ".json")).read_text())
    assert validate_record(raw, archive_name=name, where="r")["cpu_level"] == "v3"
    # The same record without its level would be the baseline runtime: another name.
    with pytest.raises(PublishError, match=r"say python-3\.13\.5-debian-12-amd64\.tar\.zst"):
        validate_record({**raw, "cpu_level": None}, archive_name=name, where="r")
    with pytest.raises(PublishError, match="cpu_level"):
        validate_record({**raw, "cpu_level": "v5"}, archive_name=name, where="r")
    # A record from before CPU levels (no key) is a baseline one.
    old = {k: v for k, v in raw.items() if k != "cpu_level"}
    old["name"] = name.replace("amd64v3", "amd64")
    assert validate_record(old, archive_name=old["name"], where="r")["cpu_level"] is None


def test_publishing_a_level_cell_checks_the_record_says_so(tmp_path: Path) -> None:
    from orchestrator.publish.record import cell_identity

    matrix = load_matrix(Path(__file__).resolve().parents[2] / "matrix.yaml")
    artifacts = tmp_path / "artifacts"
    v3 = make_artifact(artifacts, cpu_level="v3")
    cell = matrix.cell("3.13.5-debian-12-amd64v3")
    assert load_artifact(artifacts, v3, expect=cell_identity(cell)).record["cpu_level"] == "v3"
    v4 = matrix.cell("3.13.5-debian-12-amd64v4")
    with pytest.raises(PublishError, match=r"cpu_level 'v3' \(the cell's is 'v4'\)"):
        load_artifact(artifacts, v3, expect=cell_identity(v4))


def test_publish_without_cells_takes_built_level_cells_too(
    repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli.main import main

    out = tmp_path / "out"
    baseline = make_artifact(out / "artifacts", content=b"baseline")
    v3 = make_artifact(out / "artifacts", content=b"v3", cpu_level="v3")
    matrix = str(repo_root / "matrix.yaml")
    assert main(["--matrix", matrix, "--out", str(out), "publish"]) == 0
    published = json.loads((out / "publish" / "manifest.json").read_text())["runtimes"]
    assert {r["name"] for r in published} == {baseline, v3}
    # check-manifest takes a level cell only when a selector names it: the baseline's
    # selector checks the baseline cell alone, the level's id that cell.
    for selector in ("3.13.5-debian-12-amd64*", "3.13.5-debian-12-amd64v3"):
        capsys.readouterr()
        assert main(["--matrix", matrix, "--out", str(out), "check-manifest", selector]) == 0
        assert "1 cell(s) published and consistent" in capsys.readouterr().out
    # The v4 twin was never published: named, it is reported missing.
    assert main(["--matrix", matrix, "--out", str(out), "check-manifest", "*-12-amd64v[34]"]) != 0
    err = capsys.readouterr().err
    assert "python-3.13.5-debian-12-amd64v4.tar.zst: not in the manifest" in err
    assert "python-3.13.5-debian-12-amd64v3.tar.zst:" not in err


# --- the machine's CPU: builds refuse, verification skips with the reason ------------------

# /proc/cpuinfo of a Nehalem-class CPU (x86-64-v2, no AVX) and of one with AVX-512 (v4), as
# Linux prints them (two processors each; the flags line is what is read).
NEHALEM_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
    "sse sse2 ht syscall nx rdtscp lm constant_tsc rep_good nopl xtopology cpuid pni ssse3 cx16 "
    "sse4_1 sse4_2 x2apic popcnt hypervisor lahf_lm"
)
V4_FLAGS = NEHALEM_FLAGS + (
    " avx avx2 bmi1 bmi2 f16c fma abm movbe xsave avx512f avx512dq avx512cd avx512bw avx512vl"
)


def _cpuinfo(flags: str) -> str:
    return "".join(
        f"processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: test\nflags\t\t: {flags}\n"
        "bugs\t\t: spectre_v1\n\n"
        for n in range(2)
    )


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    from orchestrator.verify.cpulevel import host_cpu_flags, parse_cpu_flags

    flags = parse_cpu_flags(_cpuinfo(NEHALEM_FLAGS))
    assert {"sse4_2", "popcnt", "lahf_lm"} <= flags and "avx" not in flags
    assert "spectre_v1" not in flags  # the `bugs` line is not a feature
    # Only what every processor reports counts.
    mixed = _cpuinfo(V4_FLAGS).replace(V4_FLAGS, NEHALEM_FLAGS, 1)
    assert "avx2" not in parse_cpu_flags(mixed)
    assert parse_cpu_flags("processor : 0\nFeatures : fp asimd\n") == frozenset()  # arm64
    path = tmp_path / "cpuinfo"
    path.write_text(_cpuinfo(V4_FLAGS))
    assert host_cpu_flags(path) == parse_cpu_flags(_cpuinfo(V4_FLAGS))
    assert host_cpu_flags(tmp_path / "missing") == frozenset()


def test_what_a_cpu_lacks_is_named() -> None:
    from orchestrator.verify.cpulevel import lacks, parse_cpu_flags

    nehalem = parse_cpu_flags(_cpuinfo(NEHALEM_FLAGS))
    assert lacks(CpuLevel.V2, nehalem) is None
    assert lacks(CpuLevel.V3, nehalem) == (
        "host CPU lacks x86-64-v3: avx, avx2, bmi1, bmi2, f16c, fma, abm, movbe, xsave"
    )
    assert lacks(CpuLevel.V4, nehalem).startswith("host CPU lacks x86-64-v4: avx, avx2")  # type: ignore[union-attr]
    v4 = parse_cpu_flags(_cpuinfo(V4_FLAGS))
    assert all(lacks(level, v4) is None for level in CpuLevel)
    v3 = v4 - {"avx512bw", "avx512vl"}
    assert lacks(CpuLevel.V4, v3) == "host CPU lacks x86-64-v4: avx512bw, avx512vl"


def test_a_level_cell_is_not_built_where_its_level_cannot_run(repo_root: Path) -> None:
    from orchestrator.verify.cpulevel import HostCpuError, parse_cpu_flags, require_level

    matrix = load_matrix(repo_root / "matrix.yaml")
    nehalem = parse_cpu_flags(_cpuinfo(NEHALEM_FLAGS))
    require_level(matrix.cell("3.13.5-debian-12-amd64"), frozenset())  # baseline: no check
    require_level(matrix.cell("3.13.5-debian-12-amd64v2"), nehalem)
    with pytest.raises(HostCpuError) as info:
        require_level(matrix.cell("3.13.5-debian-12-amd64v3"), nehalem)
    message = str(info.value)
    assert info.value.exit_code == 7 and "\n" not in message
    assert message.startswith(
        "3.13.5-debian-12-amd64v3 is built for x86-64-v3, and the build's host CPU lacks "
        "x86-64-v3: avx, avx2"
    )
    assert "build it on an amd64 machine with x86-64-v3" in message


def _isa_elf(name: str, isa: int, linked: bool = True) -> Any:
    from orchestrator.verify.elfaudit import ElfInfo
    from orchestrator.verify.elfharden import ElfHardening

    hardening = ElfHardening(
        linked=linked, gnu_stack=True, exec_stack=False, wx_load=False, relro=True,
        dynamic=True, bind_now=True, textrel=False, stack_protector=True, fortified=("x",),
    )  # fmt: skip
    return ElfInfo(
        name=name, machine="EM_X86_64", needed=(), rpath=(), runpath=(), has_symtab=False,
        hardening=hardening, x86_isa_needed=isa,
    )  # fmt: skip


def test_every_linked_file_must_carry_the_level() -> None:
    from orchestrator.verify.runtime import isa_level_check

    # ld marks baseline (1) from crt files plus the level: 5 for v3.
    good = [_isa_elf("bin/python3.13", 5), _isa_elf("lib/libpython3.13.so.1.0", 4)]
    check = isa_level_check([*good, _isa_elf("lib/python3.13/config-3.13/python.o", 0, False)],
                            CpuLevel.V3)  # fmt: skip
    assert check.ok and check.detail == "2 files: GNU_PROPERTY_X86_ISA_1_NEEDED has x86-64-v3"
    bad = isa_level_check([*good, _isa_elf("lib/python3.13/lib-dynload/_ssl.so", 1)], CpuLevel.V3)
    assert not bad.ok and "lib-dynload/_ssl.so" in bad.detail and "1 of 3 files" in bad.detail
    # A v3 marker is not a v4 one.
    assert not isa_level_check(good, CpuLevel.V4).ok
    assert not isa_level_check([], CpuLevel.V3).ok


def test_the_audit_checks_the_marker_only_for_level_runtimes() -> None:
    from orchestrator.matrix import Arch
    from orchestrator.verify.elfaudit import ArchiveScan
    from orchestrator.verify.runtime import audit_checks

    elves = (_isa_elf("bin/python3.13", 1), _isa_elf("lib/libpython3.13.so.1.0", 1))
    scan = ArchiveScan(
        members=("bin", "include", "lib", *(e.name for e in elves)), elves=elves,
        unreadable_elves=(), static_libs=(), build_path_hits=(),
    )  # fmt: skip
    baseline = audit_checks(scan, major_minor="3.13", arch=Arch.AMD64)
    assert "elf:isa-level" not in {c.name for c in baseline}
    level = audit_checks(scan, major_minor="3.13", arch=Arch.AMD64, cpu_level=CpuLevel.V3)
    assert [c.ok for c in level if c.name == "elf:isa-level"] == [False]


class _Container:
    def __init__(self, calls: list[list[str]], command: list[str]) -> None:
        self.calls, self.command = calls, command
        self.attrs: dict[str, Any] = {"State": {"OOMKilled": False}}

    def start(self) -> None:
        self.calls.append(self.command)

    def wait(self, timeout: float | None = None) -> dict[str, int]:
        return {"StatusCode": 0}

    def reload(self) -> None:
        pass

    def logs(self, *, stdout: bool, stderr: bool) -> bytes:
        if not stdout:
            return b""
        if self.command[:2] == ["bash", "/farm/recipe/verify-runtime.sh"]:
            stage = self.command[2]
            # The runtime stage reports the checks every runtime must pass (verify/required.py).
            required = (*CORE, PIP) if stage == "runtime" else ()
            lines = [f"CHECK {stage}:ran ok yes", *(f"CHECK {name} ok yes" for name in required)]
            return ("\n".join([*lines, f"DONE {stage}"]) + "\n").encode()
        return b""  # the package query

    def remove(self, *, force: bool) -> None:
        pass


class _Engine:
    """Records the containers verification starts; each stage reports one passing check."""

    def __init__(self) -> None:
        self.started: list[list[str]] = []
        engine = self

        class Containers:
            def create(self, image: str, **kwargs: Any) -> _Container:
                return _Container(engine.started, list(kwargs["command"]))

        self.containers = Containers()


def _verify_level(tmp_path: Path, flags: str, **kwargs: Any) -> tuple[Any, _Engine]:
    from orchestrator.verify.elfaudit import ArchiveScan
    from orchestrator.verify.runtime import HostAudit, verify_archive

    archive = tmp_path / "python-3.13.5-debian-12-amd64v4.tar.zst"
    archive.write_bytes(b"not read: the audit is given")
    engine = _Engine()
    scan = ArchiveScan(members=(), elves=(), unreadable_elves=(), static_libs=(),
                       build_path_hits=())  # fmt: skip
    report = verify_archive(
        engine,  # type: ignore[arg-type]
        archive=archive,
        metadata={
            "cell": "3.13.5-debian-12-amd64v4",
            "arch": "amd64",
            "major": 3,
            "minor": 13,
            "cpu_level": "v4",
        },
        run_image="run",
        builder_image="builder",
        consumer_image="consumer",
        expected_modules=["ssl"],
        log_path=tmp_path / "verify.log",
        transfer="bind",
        audit=HostAudit(checks=[], scan=scan, warnings=[]),
        cpu_flags=lambda: frozenset(flags.split()),
        **kwargs,
    )
    return report, engine


def test_verification_runs_everything_on_a_machine_with_the_level(tmp_path: Path) -> None:
    report, engine = _verify_level(tmp_path, V4_FLAGS)
    stages = [c[2] for c in engine.started if c[0] == "bash"]
    assert stages == ["runtime", "extension", "consumers"]
    checks = {c.name: c for c in report.checks}
    assert checks["cpu:level"].ok and checks["cpu:level"].detail.startswith(
        "host CPU has x86-64-v4 (cx16 lahf_lm"
    )
    assert {"runtime:ran", "extension:ran", "consumers:ran"} <= set(checks)
    assert report.ok


def test_verification_skips_what_cannot_run_and_says_why(tmp_path: Path) -> None:
    from orchestrator.errors import VerificationError
    from orchestrator.verify.runtime import raise_for_failures

    report, engine = _verify_level(tmp_path, NEHALEM_FLAGS)
    # No stage container started (the runtime cannot start on this CPU); nothing crashed.
    assert not [c for c in engine.started if c[0] == "bash"]
    checks = {c.name: c for c in report.checks}
    why = "host CPU lacks x86-64-v4: avx, avx2"
    assert not checks["cpu:level"].ok
    assert checks["cpu:level"].detail.startswith(
        f"not verified (verify on a machine with x86-64-v4, or --allow-skip cpu:level): {why}"
    )
    assert "the runtime, extension, consumers checks cannot run here" in checks["cpu:level"].detail
    for stage in ("runtime", "extension", "consumers"):
        assert checks[f"stage:{stage}"].skipped
        assert checks[f"stage:{stage}"].detail.startswith(why)
    # A check that did not run did not pass: the runtime is not verified on this machine...
    assert not report.ok
    with pytest.raises(
        VerificationError,
        match=r"cpu:level \(required, but skipped: not verified \(verify on a machine with "
        r"x86-64-v4",
    ) as info:
        raise_for_failures(report, what="3.13.5-debian-12-amd64v4")
    assert "--allow-skip cpu:level" in str(info.value)
    log = (tmp_path / "verify.log").read_text()
    assert "CHECK cpu:level skip not verified" in log
    assert "CHECK stage:runtime skip host CPU lacks x86-64-v4: avx, avx2" in log
    # cpu:level stands for the required container checks: the one failure, naming the way out.
    assert [c.name for c in report.failures] == ["cpu:level"]
    # ...unless the operator allows that skip.
    allowed, _ = _verify_level(tmp_path, NEHALEM_FLAGS, allowed_skips=["cpu:level"])
    assert allowed.ok and allowed.allowed_skips == ("cpu:level",)
    level = next(c for c in allowed.checks if c.name == "cpu:level")
    assert level.detail.startswith(f"allowed by the caller: {why}")


def test_a_baseline_runtime_never_reads_the_cpu(tmp_path: Path) -> None:
    from orchestrator.verify.elfaudit import ArchiveScan
    from orchestrator.verify.runtime import HostAudit, verify_archive

    archive = tmp_path / "python-3.13.5-debian-12-amd64.tar.zst"
    archive.write_bytes(b"x")
    scan = ArchiveScan(members=(), elves=(), unreadable_elves=(), static_libs=(),
                       build_path_hits=())  # fmt: skip

    def no(_: Any = None) -> frozenset[str]:
        raise AssertionError("a baseline runtime's verification read the CPU's features")

    report = verify_archive(
        _Engine(),  # type: ignore[arg-type]
        archive=archive,
        metadata={"arch": "amd64", "major": 3, "minor": 13, "cpu_level": None},
        run_image="run", builder_image="builder", expected_modules=[],
        log_path=tmp_path / "verify.log", transfer="bind",
        audit=HostAudit(checks=[], scan=scan, warnings=[]), cpu_flags=no,
    )  # fmt: skip
    assert "cpu:level" not in {c.name for c in report.checks}


def test_verify_cli_accepts_the_cpu_level_skip() -> None:
    from orchestrator.verify.required import ALL_REQUIRED, check_allowed_skips

    assert "cpu:level" in ALL_REQUIRED
    check_allowed_skips(["cpu:level"])  # an unknown name would raise ConfigError


def test_a_remote_engines_cpu_is_read_in_a_container_there() -> None:
    from orchestrator.matrix import Arch
    from orchestrator.verify.cpulevel import engine_cpu_flags

    created: list[dict[str, Any]] = []

    class Container:
        removed = False

        def start(self) -> None:
            pass

        def wait(self, timeout: float | None = None) -> dict[str, int]:
            return {"StatusCode": 0}

        def logs(self, *, stdout: bool, stderr: bool) -> bytes:
            return _cpuinfo(NEHALEM_FLAGS).encode() if stdout else b""

        def remove(self, *, force: bool) -> None:
            Container.removed = True

    class Containers:
        def create(self, image: str, **kwargs: Any) -> Container:
            created.append({"image": image, **kwargs})
            return Container()

    class Api:
        base_url = "http://arm64-builder:2375"  # not the local socket: another machine

    class Client:
        api = Api()
        containers = Containers()

    flags = engine_cpu_flags(Client(), image="base", arch=Arch.AMD64, cell_id="c")  # type: ignore[arg-type]
    assert "sse4_2" in flags and "avx2" not in flags
    [seen] = created
    assert seen["image"] == "base" and seen["command"] == ["cat", "/proc/cpuinfo"]
    assert seen["network_disabled"] is True and seen["cap_drop"] == ["ALL"]
    assert seen["platform"] == "linux/amd64" and seen["environment"] == {}
    assert Container.removed


def test_the_sbom_names_the_level_only_when_there_is_one(tmp_path: Path) -> None:
    from orchestrator.publish.sbom import build_sbom, validate_sbom

    def cpython_properties(name: str) -> dict[str, str]:
        raw = json.loads((tmp_path / name.replace(".tar.zst", ".json")).read_text())
        text = build_sbom(raw, bundled=[], ships_pip_wheel=False)
        validate_sbom(text, what="t")
        component = next(c for c in json.loads(text)["components"] if c["bom-ref"] == "cpython")
        return {p["name"]: p["value"] for p in component.get("properties", [])}

    v3 = cpython_properties(make_artifact(tmp_path, cpu_level="v3"))
    assert v3["python-farm:cpu-level"] == "v3"
    baseline = cpython_properties(make_artifact(tmp_path))
    assert "python-farm:cpu-level" not in baseline
