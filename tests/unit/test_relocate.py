"""orchestrator/recipe/relocate.py on the files a real 3.13.5 fast build installs.

tests/unit/data/relocate/ holds them as `make install` wrote them (configure --prefix
/opt/python-farm, built in /tmp/python-build): _sysconfigdata, the .pc files, the shell
python3.13-config, config-3.13-*/python-config.py and the config Makefile (gzipped; the .py
files as .sample). The script runs in the builder with the new interpreter; its logic only
needs the files, so the host's interpreter and tools (sh, pkg-config, GNU make) exercise it.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from orchestrator.buildspec import RECIPE_DIR

SCRIPT = RECIPE_DIR / "relocate.py"
DATA = Path(__file__).parent / "data" / "relocate"
PREFIX = "/opt/python-farm"
BUILD_DIR = "/tmp/python-build"
SYSCONFIGDATA = "_sysconfigdata__linux_x86_64-linux-gnu.py"
LIBPL = "lib/python3.13/config-3.13-x86_64-linux-gnu"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("farm_relocate", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


relocate = _load()


def _sample(name: str) -> str:
    if name == "Makefile":
        return gzip.decompress((DATA / "Makefile.gz").read_bytes()).decode()
    if name.endswith(".py"):  # stored as .sample: linters leave upstream's code alone
        name += ".sample"
    return (DATA / name).read_text()


def _build_time_vars(text: str, file: Path | None) -> dict[str, object]:
    namespace: dict[str, object] = {} if file is None else {"__file__": str(file)}
    exec(compile(text, str(file or "<text>"), "exec"), namespace)
    result = namespace["build_time_vars"]
    assert isinstance(result, dict)
    return result


def _relocated_sysconfigdata() -> str:
    text: str = relocate.relocate_sysconfigdata(
        _sample(SYSCONFIGDATA), prefix=PREFIX, build_dir=BUILD_DIR, depth=2, libpl=LIBPL
    )
    return text


def _tree(root: Path) -> Path:
    """An install tree of the samples, as `make install` leaves it (before relocation)."""
    stdlib = root / "lib" / "python3.13"
    config = root / LIBPL
    config.mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "include" / "python3.13").mkdir(parents=True)
    (stdlib / "lib-dynload").mkdir()
    (stdlib / SYSCONFIGDATA).write_text(_sample(SYSCONFIGDATA))
    pkgconfig = root / "lib" / "pkgconfig"
    pkgconfig.mkdir()
    for name in ("python-3.13.pc", "python-3.13-embed.pc"):
        (pkgconfig / name).write_text(_sample(name))
    (pkgconfig / "python3.pc").symlink_to("python-3.13.pc")
    (pkgconfig / "python3-embed.pc").symlink_to("python-3.13-embed.pc")
    script = root / "bin" / "python3.13-config"
    script.write_text(_sample("python3.13-config"))
    script.chmod(0o755)
    (root / "bin" / "python3-config").symlink_to("python3.13-config")
    (config / "python-config.py").write_text(_sample("python-config.py"))
    (config / "python-config.py").chmod(0o755)
    (config / "Makefile").write_text(_sample("Makefile"))
    return root


# --- _sysconfigdata ----------------------------------------------------------------------------


def test_samples_name_the_build_prefix_and_directory() -> None:
    """The premise: without relocation the data names paths that exist only on the builder."""
    original = _build_time_vars(_sample(SYSCONFIGDATA), None)
    assert original["LIBDIR"] == f"{PREFIX}/lib"
    assert original["abs_builddir"] == BUILD_DIR
    naming = [k for k, v in original.items() if isinstance(v, str) and PREFIX in v]
    assert len(naming) >= 24, naming


def test_sysconfigdata_answers_the_directory_it_is_imported_from(tmp_path: Path) -> None:
    root = tmp_path / "somewhere else" / "py"
    target = root / "lib" / "python3.13" / SYSCONFIGDATA
    target.parent.mkdir(parents=True)
    target.write_text(_relocated_sysconfigdata())
    spec = importlib.util.spec_from_file_location("relocated_sysconfigdata", target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = module.build_time_vars
    assert values["prefix"] == values["exec_prefix"] == str(root)
    assert values["LIBDIR"] == f"{root}/lib"
    assert values["LIBPL"] == f"{root}/{LIBPL}"
    assert values["INCLUDEPY"] == values["CONFINCLUDEPY"] == f"{root}/include/python3.13"
    assert values["BINDIR"] == f"{root}/bin"
    assert values["LIBPC"] == f"{root}/lib/pkgconfig"
    # The build tree is gone: like upstream's `srcdir`, it is the config directory now.
    assert values["abs_builddir"] == values["abs_srcdir"] == f"{root}/{LIBPL}"
    assert values["RUNSHARED"] == f"LD_LIBRARY_PATH={root}/{LIBPL}"
    assert f"'--prefix={root}'" in values["CONFIG_ARGS"]
    # Nothing anywhere names the builder's paths or the placeholder; the helper is gone.
    flat = repr(values)
    assert PREFIX not in flat and BUILD_DIR not in flat
    assert not any(w.startswith(("/install", "'/install")) for w in flat.split())
    assert set(vars(module)) - {k for k in vars(module) if k.startswith("__")} == {
        "build_time_vars"
    }


def test_values_without_the_paths_keep_their_bytes() -> None:
    original_text = _sample(SYSCONFIGDATA)
    new_text = _relocated_sysconfigdata()
    original = _build_time_vars(original_text, None)
    relocated = _build_time_vars(new_text, Path("/x/lib/python3.13") / SYSCONFIGDATA)
    assert original.keys() == relocated.keys()
    untouched = {
        k
        for k, v in original.items()
        if not (isinstance(v, str) and (PREFIX in v or BUILD_DIR in v))
    }
    assert {k: relocated[k] for k in untouched} == {k: original[k] for k in untouched}
    # Source bytes too: every original line without the paths is still there, in order.
    kept = [
        line for line in original_text.splitlines() if PREFIX not in line and BUILD_DIR not in line
    ]
    new_lines = iter(new_text.splitlines())
    assert all(line in new_lines for line in kept)
    # Relocated values are the old ones with the tree's root (and its config dir) swapped in.
    for key in original.keys() - untouched:
        old = original[key]
        assert isinstance(old, str)
        expected = old.replace(BUILD_DIR, "\0").replace(PREFIX, "/x").replace("\0", "/x/" + LIBPL)
        assert relocated[key] == expected, key


# --- what uv reads -----------------------------------------------------------------------------
# uv's parser (astral-sh/uv crates/uv-python/src/sysconfig/parser.rs) and its install-time
# rewrite (sysconfig/mod.rs update_sysconfig): the header line, a literal dict, `/install`
# replaced at the start of whitespace-separated words, the file rewritten from the dict alone.


def _uv_rewrite(text: str, real_prefix: str) -> dict[str, object]:
    """What `uv python install` leaves in the file, as values (uv drops everything else)."""
    values: dict[str, object] = dict(relocate.uv_literal_values(text))
    for key, value in values.items():
        if isinstance(value, str):
            words = [
                real_prefix + w.removeprefix("/install") if w.startswith("/install") else w
                for w in value.split()
            ]
            values[key] = " ".join(words)
    return values


def test_uv_reads_the_relocated_file_and_its_rewrite_names_the_install_dir() -> None:
    text = _relocated_sysconfigdata()
    assert text.startswith(relocate.UV_HEADER + "build_time_vars = {\n")
    literal = relocate.uv_literal_values(text)
    # uv reads exactly the values Python's own parser sees in the dict, placeholder included.
    original = _build_time_vars(_sample(SYSCONFIGDATA), None)
    assert literal.keys() == original.keys()
    assert literal["LIBDIR"] == "/install/lib"
    assert literal["SOABI"] == original["SOABI"]
    rewritten = _uv_rewrite(text, "/home/u/.local/share/uv/python/cpython-3.13.5")
    root = "/home/u/.local/share/uv/python/cpython-3.13.5"
    for name, expected in {
        "prefix": root,
        "LIBDIR": f"{root}/lib",
        "LIBPL": f"{root}/{LIBPL}",
        "INCLUDEPY": f"{root}/include/python3.13",
        "CONFINCLUDEPY": f"{root}/include/python3.13",
        "BINDIR": f"{root}/bin",
    }.items():
        assert rewritten[name] == expected, name
    assert PREFIX not in repr(rewritten) and BUILD_DIR not in repr(rewritten)


def test_the_unrelocated_sample_is_what_uv_reads_today() -> None:
    """The premise: CPython's own file is in uv's format, so ours must stay in it."""
    assert relocate.uv_literal_values(_sample(SYSCONFIGDATA))["LIBDIR"] == f"{PREFIX}/lib"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("build_time_vars = {'A': 'x'}\n", "header"),
        ("# system configuration generated and used by the sysconfig module\nx = {}\n", "second"),
        (
            "# system configuration generated and used by the sysconfig module\n"
            "build_time_vars = {'A': _prefix + '/lib'}\n",
            "not a literal",
        ),
        (
            "# system configuration generated and used by the sysconfig module\n"
            "build_time_vars = {'A': 'a\\nb'}\n",
            "escape",
        ),
        (
            "# system configuration generated and used by the sysconfig module\n"
            "build_time_vars = {'A': 'x',\n",
            "end of file",
        ),
    ],
)
def test_what_uv_cannot_read_is_refused(text: str, reason: str) -> None:
    with pytest.raises(relocate.RelocationError, match=reason):
        relocate.uv_literal_values(text)


def test_the_uv_format_check_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / SYSCONFIGDATA
    good.write_text(_relocated_sysconfigdata())
    bad = tmp_path / "_sysconfigdata_bad.py"
    bad.write_text("from os import sep\n" + _relocated_sysconfigdata())
    ok = subprocess.run(
        [sys.executable, "-I", "-B", str(SCRIPT), "--uv-format", str(good)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "LIBDIR=/install/lib" in ok.stdout
    refused = subprocess.run(
        [sys.executable, "-I", "-B", str(SCRIPT), "--uv-format", str(bad)],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert refused.stdout.strip() == (
        "_sysconfigdata_bad.py: uv format: the first line is not CPython's sysconfig header"
    )


def test_output_is_deterministic_and_a_second_pass_is_refused() -> None:
    first = _relocated_sysconfigdata()
    assert _relocated_sysconfigdata() == first
    assert PREFIX not in first and BUILD_DIR not in first
    ast.parse(first)
    with pytest.raises(relocate.RelocationError, match="relocated already"):
        relocate.relocate_sysconfigdata(
            first, prefix=PREFIX, build_dir=BUILD_DIR, depth=2, libpl=LIBPL
        )


def test_text_executed_without_a_file_uses_the_running_interpreter() -> None:
    """PyO3/maturin read the file and exec its text with a script appended: no __file__."""
    values = _build_time_vars(_relocated_sysconfigdata(), None)
    assert values["LIBDIR"] == f"{sys.base_prefix}/lib"


def test_sysconfig_reads_the_relocated_data(tmp_path: Path) -> None:
    """What cross-compiling tools do: _PYTHON_SYSCONFIGDATA_NAME + PYTHONPATH at a copy."""
    root = tmp_path / "rt"
    target = root / "lib" / "python3.13" / SYSCONFIGDATA
    target.parent.mkdir(parents=True)
    target.write_text(_relocated_sysconfigdata())
    env = {
        **os.environ,
        "_PYTHON_SYSCONFIGDATA_NAME": SYSCONFIGDATA.removesuffix(".py"),
        "PYTHONPATH": str(target.parent),
    }
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sysconfig; v = sysconfig.get_config_var; "
            "print(v('LIBDIR'), v('INCLUDEPY'), v('LIBPL'), v('SOABI'))",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [
        f"{root}/lib",
        f"{root}/include/python3.13",
        f"{root}/{LIBPL}",
        "cpython-313-x86_64-linux-gnu",
    ]


def test_prefix_only_matches_whole_paths() -> None:
    text = (
        relocate.UV_HEADER + "build_time_vars = {'A': '/opt/python-farmer/x', "
        "'B': '/opt/python-farm.d', 'C': 1, 'D': '/opt/python-farm/lib'}\n"
    )
    out = relocate.relocate_sysconfigdata(
        text, prefix=PREFIX, build_dir=BUILD_DIR, depth=2, libpl=LIBPL
    )
    assert "'A': '/opt/python-farmer/x'" in out
    assert "'B': '/opt/python-farm.d'" in out
    assert "'D': '/install/lib'" in out


def test_sysconfigdata_without_the_dict_is_refused() -> None:
    with pytest.raises(relocate.RelocationError, match="build_time_vars"):
        relocate.relocate_sysconfigdata(
            relocate.UV_HEADER + "x = 1\n",
            prefix=PREFIX,
            build_dir=BUILD_DIR,
            depth=2,
            libpl=LIBPL,
        )


def test_a_value_already_naming_the_placeholder_is_refused() -> None:
    """The trailer replaces the placeholder everywhere in a relocated value."""
    text = relocate.UV_HEADER + "build_time_vars = {'A': '/opt/python-farm /install'}\n"
    with pytest.raises(relocate.RelocationError, match="names /install already"):
        relocate.relocate_sysconfigdata(
            text, prefix=PREFIX, build_dir=BUILD_DIR, depth=2, libpl=LIBPL
        )


# --- pkg-config ------------------------------------------------------------------------------


def test_pc_prefix_is_relative_to_the_file() -> None:
    text = relocate.relocate_pc(_sample("python-3.13-embed.pc"), prefix=PREFIX)
    assert text.splitlines()[1] == "prefix=${pcfiledir}/../.."
    assert PREFIX not in text
    # Everything else byte-identical.
    assert text.splitlines()[2:] == _sample("python-3.13-embed.pc").splitlines()[2:]


def test_pc_without_the_prefix_line_is_refused() -> None:
    with pytest.raises(relocate.RelocationError, match="prefix="):
        relocate.relocate_pc("prefix=/usr\nLibs: -lpython3.13\n", prefix=PREFIX)


@pytest.mark.skipif(shutil.which("pkg-config") is None, reason="needs pkg-config")
def test_pkg_config_resolves_the_unpacked_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path / "rt")
    relocate.relocate_tree(root, prefix=PREFIX, build_dir=BUILD_DIR)
    env = {**os.environ, "PKG_CONFIG_PATH": str(root / "lib" / "pkgconfig")}
    for package in ("python3-embed", "python-3.13-embed", "python3"):
        flags = subprocess.run(
            ["pkg-config", "--cflags", "--libs", package],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        include = next(f.removeprefix("-I") for f in flags if f.startswith("-I"))
        assert Path(include).resolve() == root / "include" / "python3.13", flags
        if "embed" in package:
            libdir = next(f.removeprefix("-L") for f in flags if f.startswith("-L"))
            assert Path(libdir).resolve() == root / "lib", flags
            assert "-lpython3.13" in flags


# --- python-config -----------------------------------------------------------------------------


def test_shell_config_answers_where_it_is(tmp_path: Path) -> None:
    root = _tree(tmp_path / "rt")
    relocate.relocate_tree(root, prefix=PREFIX, build_dir=BUILD_DIR)
    script = root / "bin" / "python3-config"  # through the symlink, as users call it
    text = (root / "bin" / "python3.13-config").read_text()
    assert PREFIX not in text

    def ask(*options: str) -> str:
        return subprocess.run(
            ["sh", str(script), *options], capture_output=True, text=True, check=True
        ).stdout.strip()

    assert ask("--prefix") == ask("--exec-prefix") == str(root)
    assert ask("--includes").split() == [f"-I{root}/include/python3.13"] * 2
    assert ask("--ldflags", "--embed").split()[:2] == [f"-L{root}/lib", "-lpython3.13"]
    assert ask("--configdir") == f"{root}/{LIBPL}"


def test_shell_config_of_another_shape_is_refused() -> None:
    with pytest.raises(relocate.RelocationError, match=r"python-config\.sh"):
        relocate.relocate_config_sh(f"#!/bin/sh\necho {PREFIX}\n", prefix=PREFIX)


def test_python_config_runs_the_interpreter_beside_it(tmp_path: Path) -> None:
    root = _tree(tmp_path / "rt")
    relocate.relocate_tree(root, prefix=PREFIX, build_dir=BUILD_DIR)
    config = root / LIBPL / "python-config.py"
    text = config.read_text()
    assert PREFIX not in text
    compile(text, str(config), "exec")  # still Python
    # A stand-in interpreter that says how it was called.
    fake = root / "bin" / "python3.13"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$0" "$@"\n')
    fake.chmod(0o755)
    out = subprocess.run(
        [str(config), "--prefix"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert Path(out[0]).resolve() == fake
    assert out[1:] == [str(config), "--prefix"]
    # And the real thing: Python runs it as upstream's script (here the host's sysconfig).
    includes = subprocess.run(
        [sys.executable, str(config), "--includes"], capture_output=True, text=True, check=True
    ).stdout
    assert includes.startswith("-I")


def test_python_config_with_an_unexpected_shebang_is_refused() -> None:
    with pytest.raises(relocate.RelocationError, match="shebang"):
        relocate.relocate_config_py(
            "#!/usr/bin/python3\n", prefix=PREFIX, depth=3, interpreter="python3.13"
        )


# --- Makefile ----------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_makefile_prefix_follows_the_makefile(tmp_path: Path) -> None:
    root = _tree(tmp_path / "rt")
    relocate.relocate_tree(root, prefix=PREFIX, build_dir=BUILD_DIR)
    makefile = root / LIBPL / "Makefile"
    text = makefile.read_text()
    assert PREFIX not in text and BUILD_DIR not in text
    wrapper = tmp_path / "wrapper.mk"
    wrapper.write_text(
        f"include {makefile}\n"
        "farm-print:\n\t@echo $(prefix) $(LIBDIR) $(LIBPL) $(abs_srcdir) $(INCLUDEPY)\n"
    )
    out = subprocess.run(
        ["make", "-s", "-f", str(wrapper), "farm-print"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [
        str(root),
        f"{root}/lib",
        f"{root}/{LIBPL}",
        f"{root}/{LIBPL}",
        f"{root}/include/python3.13",
    ]


def test_makefile_without_the_prefix_line_is_refused() -> None:
    with pytest.raises(relocate.RelocationError, match="prefix="):
        relocate.relocate_makefile("prefix=\t/usr\n", prefix=PREFIX, build_dir=BUILD_DIR)


# --- the whole tree ----------------------------------------------------------------------------


def test_script_relocates_a_tree_and_leaves_nothing_behind(tmp_path: Path) -> None:
    root = _tree(tmp_path / "rt")
    result = subprocess.run(
        [sys.executable, "-I", "-B", str(SCRIPT), PREFIX, BUILD_DIR, str(root)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"relocated lib/python3.13/{SYSCONFIGDATA}",
        "relocated lib/pkgconfig/python-3.13-embed.pc",
        "relocated lib/pkgconfig/python-3.13.pc",
        "relocated bin/python3.13-config",
        f"relocated {LIBPL}/python-config.py",
        f"relocated {LIBPL}/Makefile",
    ]
    assert relocate.leftovers(root, (PREFIX, BUILD_DIR)) == []
    assert (root / "lib" / "pkgconfig" / "python3.pc").is_symlink()
    assert os.access(root / LIBPL / "python-config.py", os.X_OK)


def test_two_runs_write_the_same_bytes(tmp_path: Path) -> None:
    trees = [_tree(tmp_path / name) for name in ("a", "b")]
    for tree in trees:
        relocate.relocate_tree(tree, prefix=PREFIX, build_dir=BUILD_DIR)

    def contents(tree: Path) -> dict[str, bytes]:
        return {
            p.relative_to(tree).as_posix(): p.read_bytes()
            for p in sorted(tree.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }

    assert contents(trees[0]) == contents(trees[1])


def test_script_fails_naming_a_file_it_could_not_relocate(tmp_path: Path) -> None:
    root = _tree(tmp_path / "rt")
    (root / "lib" / "python3.13" / "stray.txt").write_text(f"built in {BUILD_DIR}\n")
    result = subprocess.run(
        [sys.executable, "-I", "-B", str(SCRIPT), PREFIX, BUILD_DIR, str(root)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "lib/python3.13/stray.txt" in result.stderr


def test_script_fails_on_a_tree_without_sysconfigdata(tmp_path: Path) -> None:
    root = _tree(tmp_path / "rt")
    (root / "lib" / "python3.13" / SYSCONFIGDATA).unlink()
    result = subprocess.run(
        [sys.executable, "-I", "-B", str(SCRIPT), PREFIX, BUILD_DIR, str(root)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "_sysconfigdata_" in result.stderr
