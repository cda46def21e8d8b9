"""Build variants (matrix.yaml `variants`): the free-threaded runtime beside the default one.

Ids, names, configure arguments, fingerprints, manifests and uv's download metadata of a
free-threaded cell; the default variant's stay what they were before variants existed.
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
from orchestrator.errors import ConfigError, PublishError
from orchestrator.fingerprint import fingerprint, fingerprint_inputs
from orchestrator.matrix import VariantName, load_matrix
from orchestrator.metadata import tree_sizes
from orchestrator.publish.manifests import manifest_entry, uv_entry, uv_key, uv_metadata_key
from orchestrator.publish.publisher import Publisher, check_published, load_artifact
from orchestrator.publish.record import validate_record
from orchestrator.publish.store import DirectoryStore
from orchestrator.verify.runtime import runtime_ldversion
from tests.publish_support import make_artifact, store_write

BASE = {
    "recipe_version": 1,
    "dockerfile_sha256": "d" * 64,
    "base_image_id": "sha256:" + "b" * 64,
    "recipe_sha256": "r" * 64,
}
# The keys of a cell's fingerprint inputs before variants existed (main at c73851a).
PRE_VARIANT_KEYS = {
    "recipe_version", "python_version", "source_sha256", "stack", "arch", "dockerfile_sha256",
    "base_image_id", "recipe_sha256", "profile", "configure_args", "extra_cflags", "ldflags",
    "expected_modules",
}  # fmt: skip


@pytest.fixture
def matrix_writer(
    tmp_path: Path, repo_root: Path
) -> Callable[[Callable[[dict[str, Any]], None]], Path]:
    real = yaml.safe_load((repo_root / "matrix.yaml").read_text())

    def write(mutate: Callable[[dict[str, Any]], None]) -> Path:
        data = copy.deepcopy(real)
        mutate(data)
        path = tmp_path / "matrix.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


def test_free_threaded_cell_names(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    cell = matrix.cell("3.13.5t-debian-12-amd64")
    assert cell.variant is VariantName.FREETHREADED
    assert cell.version == "3.13.5" and cell.version_label == "3.13.5t"
    assert cell.ldversion == "3.13t"
    assert cell.archive_name == "python-3.13.5t-debian-12-amd64.tar.zst"
    default = matrix.cell("3.13.5-debian-12-amd64")
    assert default.variant is VariantName.DEFAULT and default.ldversion == "3.13"
    assert default.archive_name == "python-3.13.5-debian-12-amd64.tar.zst"


def test_shipped_matrix_has_free_threaded_cells_for_3_13_and_newer_only(repo_root: Path) -> None:
    cells = load_matrix(repo_root / "matrix.yaml").cells()
    free = [c for c in cells if c.variant is VariantName.FREETHREADED]
    assert free and all(c.python.parsed.release[:2] >= (3, 13) for c in free)
    assert all(c.id.split("-", 1)[0].endswith("t") for c in free)
    # Every free-threaded cell has its default twin.
    ids = {c.id for c in cells}
    assert all(c.id.replace(f"{c.version}t-", f"{c.version}-", 1) in ids for c in free)
    # The stack's excludes apply to both variants: no 3.14 on focal either way.
    assert not [c for c in cells if c.stack_name == "ubuntu-20.04" and c.version.startswith("3.14")]


def test_selectors_pick_a_variant_or_both(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    assert [c.id for c in matrix.select(["3.13.5t-debian-12-*"])] == [
        "3.13.5t-debian-12-amd64",
        "3.13.5t-debian-12-arm64",
    ]
    both = [c.id for c in matrix.select(["3.13.5*-debian-12-amd64"])]
    assert both == ["3.13.5-debian-12-amd64", "3.13.5t-debian-12-amd64"]


def test_configure_args_add_disable_gil_last(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    default = build_spec(matrix, matrix.cell("3.13.5-debian-12-amd64"), "fast")
    free = build_spec(matrix, matrix.cell("3.13.5t-debian-12-amd64"), "fast")
    assert "--disable-gil" not in default.configure_args
    assert free.configure_args == (*default.configure_args, "--disable-gil")


def test_default_fingerprint_inputs_have_no_variant(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    default = build_spec(matrix, matrix.cell("3.13.5-debian-12-amd64"), "fast")
    free = build_spec(matrix, matrix.cell("3.13.5t-debian-12-amd64"), "fast")
    inputs = fingerprint_inputs(default, **BASE)  # type: ignore[arg-type]
    assert set(inputs) == PRE_VARIANT_KEYS
    free_inputs = fingerprint_inputs(free, **BASE)  # type: ignore[arg-type]
    assert set(free_inputs) == PRE_VARIANT_KEYS | {"variant"}
    assert free_inputs["variant"] == "freethreaded"
    assert fingerprint(inputs) != fingerprint(free_inputs)


def test_matrix_without_variants_key_builds_default_only(
    matrix_writer: Callable[[Callable[[dict[str, Any]], None]], Path],
) -> None:
    path = matrix_writer(lambda d: d.pop("variants"))
    cells = load_matrix(path).cells()
    assert cells and all(c.variant is VariantName.DEFAULT for c in cells)


def _set_variants(value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.__setitem__("variants", value)


def _add_exclude(*excludes: dict[str, str]) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["excludes"].extend(excludes)


FT = {"python": ">=3.13", "configure_args": ["--disable-gil"]}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            _set_variants({"default": {}, "nogil": FT}),
            r"variants: unknown variant 'nogil'; known variants: default, freethreaded",
        ),
        (
            _set_variants({"default": {}, "freethreaded": {**FT, "python": ">=3.12"}}),
            r"variants.freethreaded.python: '>=3.12' admits 3.12.11, but freethreaded builds "
            r"need Python >=3.13",
        ),
        (
            _set_variants({"default": {}, "freethreaded": {"configure_args": ["--disable-gil"]}}),
            r"variants.freethreaded.python: no python specifier admits 3.11.2, 3.12.11",
        ),
        (
            _set_variants({"default": {}, "freethreaded": {"python": ">=3.13"}}),
            r"variants.freethreaded.configure_args: the freethreaded variant needs --disable-gil",
        ),
        (
            _set_variants({"default": {"configure_args": ["--disable-gil"]}}),
            r"variants.default.configure_args: --disable-gil makes a free-threaded runtime",
        ),
        (
            _set_variants({"default": {}, "freethreaded": {**FT, "configure_args": ["$(x)"]}}),
            r"variants.freethreaded.configure_args\[0\]: .*not a plain compiler/linker flag",
        ),
        (
            _add_exclude(
                {"variant": "freethreaded", "stack": "debian-13"},
                {"variant": "freethreaded", "stack": "debian-13", "reason": "again"},
            ),
            r"excludes\[3\]: variant 'freethreaded' is excluded twice: excludes\[2\] already",
        ),
        (
            _add_exclude({"variant": "freethreaded", "stack": "ubuntu-20.04", "python": "3.14.*"}),
            r"excludes\[2\]: variant 'freethreaded' is excluded twice: excludes\[0\] already",
        ),
        (
            _add_exclude({"variant": "freethreaded", "python": "3.12.*"}),
            r"excludes\[2\]: names no cell: variant 'freethreaded' has none for python '3.12.\*'",
        ),
        (
            _add_exclude({"variant": "free-threaded"}),
            r"excludes\[2\].variant: 'free-threaded' matches no variant in the matrix",
        ),
    ],
)
def test_malformed_variants_give_one_clear_line(
    matrix_writer: Callable[[Callable[[dict[str, Any]], None]], Path],
    mutate: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    path = matrix_writer(mutate)
    with pytest.raises(ConfigError, match=expected) as info:
        load_matrix(path)
    assert str(info.value).startswith(f"{path}:") and "\n" not in str(info.value)


def test_exclude_can_name_a_variant(
    matrix_writer: Callable[[Callable[[dict[str, Any]], None]], Path],
) -> None:
    path = matrix_writer(_add_exclude({"variant": "freethreaded", "arch": "arm64"}))
    cells = load_matrix(path).cells()
    free = {c.arch.value for c in cells if c.variant is VariantName.FREETHREADED}
    assert free == {"amd64"}
    assert {c.arch.value for c in cells if c.variant is VariantName.DEFAULT} == {"amd64", "arm64"}


def test_unknown_variant_is_refused_by_the_cli(
    matrix_writer: Callable[[Callable[[dict[str, Any]], None]], Path],
) -> None:
    from orchestrator.cli.main import main

    path = matrix_writer(_set_variants({"default": {}, "nogil": FT}))
    assert main(["--matrix", str(path), "plan"]) != 0


def _record(variant: str, arch: str = "amd64") -> dict[str, Any]:
    return {
        "name": f"python-3.13.5{'t' if variant == 'freethreaded' else ''}-debian-12-{arch}.tar.zst",
        "version": "3.13.5",
        "variant": variant,
        "major": 3,
        "minor": 13,
        "patch": 5,
        "prerelease": "",
        "arch": arch,
        "sha256": "a" * 64,
        "built_at": "2026-11-30T15:00:00Z",
    }


def test_uv_key_and_entry_use_uvs_spelling() -> None:
    # uv: PythonInstallationKey's Display puts `+freethreaded` after the version, and
    # PythonVariant::from_str reads "freethreaded" in the entry's `variant`.
    free = _record("freethreaded")
    assert uv_key(free) == "cpython-3.13.5+freethreaded-linux-x86_64-gnu"
    assert uv_entry(free, url="u", sbom_url="s")["variant"] == "freethreaded"
    assert (
        uv_key(_record("freethreaded", "arm64")) == "cpython-3.13.5+freethreaded-linux-aarch64-gnu"
    )
    default = _record("default")
    assert uv_key(default) == "cpython-3.13.5-linux-x86_64-gnu"
    assert uv_entry(default, url="u", sbom_url="s")["variant"] is None
    # A record from before variants is the default runtime.
    old = {k: v for k, v in default.items() if k != "variant"}
    assert uv_key(old) == "cpython-3.13.5-linux-x86_64-gnu"
    with pytest.raises(PublishError, match="variant 'debug' has no uv spelling"):
        uv_key(_record("debug"))


def test_publishing_both_variants_lists_both(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    default = make_artifact(artifacts, content=b"default runtime")
    free = make_artifact(artifacts, content=b"free-threaded runtime", variant="freethreaded")
    assert free == "python-3.13.5t-debian-12-amd64.tar.zst" and default != free
    store = DirectoryStore(tmp_path / "store")
    publisher = Publisher(store, prefix="runtimes", progress=lambda _line: None)
    for name in (default, free):
        publisher.publish(load_artifact(artifacts, name))
    manifest = json.loads((tmp_path / "store" / "runtimes" / "manifest.json").read_text())
    assert {(r["name"], r["variant"]) for r in manifest["runtimes"]} == {
        (default, "default"),
        (free, "freethreaded"),
    }
    uv = json.loads(store.get(uv_metadata_key("runtimes", "debian-12", "amd64"))[0])  # type: ignore[index]
    assert sorted(uv) == [
        "cpython-3.13.5+freethreaded-linux-x86_64-gnu",
        "cpython-3.13.5-linux-x86_64-gnu",
    ]
    assert uv["cpython-3.13.5+freethreaded-linux-x86_64-gnu"]["url"].endswith(free)
    assert uv["cpython-3.13.5+freethreaded-linux-x86_64-gnu"]["variant"] == "freethreaded"
    assert uv["cpython-3.13.5-linux-x86_64-gnu"]["variant"] is None
    # check-manifest finds each variant's own uv entry.
    assert check_published(store, "runtimes", [default, free]) == []
    free_key = "cpython-3.13.5+freethreaded-linux-x86_64-gnu"
    uv[free_key]["sha256"] = uv["cpython-3.13.5-linux-x86_64-gnu"]["sha256"]
    store_write(store, uv_metadata_key("runtimes", "debian-12", "amd64"), json.dumps(uv).encode())
    problems = check_published(store, "runtimes", [default, free])
    assert len(problems) == 1 and problems[0].startswith(free), problems


def test_manifest_entry_carries_the_variant() -> None:
    record = {
        **_record("freethreaded"),
        "stack": "debian-12",
        "distro": "debian",
        "distro_version": "12",
        "profile": "fast",
        "size": 1,
        "source": {"filename": "Python-3.13.5.tar.xz", "sha256": "b" * 64},
    }
    entry = manifest_entry(record, url="u", metadata_url="m", sbom_url="s", published_at="t")
    assert entry["variant"] == "freethreaded" and entry["version"] == "3.13.5"


def test_record_must_agree_with_its_variant(tmp_path: Path) -> None:
    name = make_artifact(tmp_path, variant="freethreaded")
    raw = json.loads((tmp_path / name.replace(".tar.zst", ".json")).read_text())
    assert validate_record(raw, archive_name=name, where="r")["variant"] == "freethreaded"
    # The same record said to be the default runtime no longer matches the `t` name.
    with pytest.raises(PublishError, match=r"version/variant/distro/arch say python-3\.13\.5-"):
        validate_record({**raw, "variant": "default"}, archive_name=name, where="r")
    with pytest.raises(PublishError, match="variant"):
        validate_record({**raw, "variant": "nogil"}, archive_name=name, where="r")
    # Publishing a default cell's record beside the t archive is refused by identity too.
    old = {k: v for k, v in raw.items() if k != "variant"}
    old["name"] = name.replace("5t-", "5-")
    assert validate_record(old, archive_name=old["name"], where="r")["variant"] == "default"


def test_verification_reads_the_layout_from_the_record() -> None:
    assert runtime_ldversion({"major": 3, "minor": 13, "variant": "freethreaded"}) == "3.13t"
    assert runtime_ldversion({"major": 3, "minor": 13, "variant": "default"}) == "3.13"
    assert runtime_ldversion({"major": 3, "minor": 12}) == "3.12"


def test_tree_sizes_finds_the_free_threaded_stdlib(tmp_path: Path) -> None:
    stdlib = tmp_path / "lib" / "python3.13t"
    (stdlib / "lib-dynload").mkdir(parents=True)
    (stdlib / "os.py").write_bytes(b"x" * 10)
    (stdlib / "lib-dynload" / "_json.cpython-313t-x86_64-linux-gnu.so").write_bytes(b"y" * 7)
    (tmp_path / "lib" / "libpython3.13t.so.1.0").write_bytes(b"z" * 5)
    sizes = tree_sizes(tmp_path, "3.13t")
    assert (sizes["stdlib_py"], sizes["lib_dynload"], sizes["libpython"]) == (10, 7, 5)


def test_plan_lists_free_threaded_cells_for_3_13_and_newer_only(
    repo_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli.main import main

    assert main(["--matrix", str(repo_root / "matrix.yaml"), "plan", "--format", "json"]) == 0
    cells = json.loads(capsys.readouterr().out)
    free = [c for c in cells if c["variant"] == "freethreaded"]
    minors = {tuple(int(p) for p in c["version"].split(".")[:2]) for c in free}
    assert minors == {(3, 13), (3, 14), (3, 15)}
    assert all(c["id"].startswith(c["version"] + "t-") for c in free)
    assert all(c["archive"] == f"python-{c['version']}t-{c['distro']}-{c['distro_version']}-"
               f"{c['arch']}.tar.zst" for c in free)  # fmt: skip
    default = {c["version"] for c in cells if c["variant"] == "default"}
    assert {"3.11.2", "3.12.11", "3.13.5"} <= default
