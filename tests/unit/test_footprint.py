"""orchestrator/recipe/footprint.py on small stdlib-shaped trees, run by the host's Python.

The script runs inside the builder with the new interpreter; its logic only needs the tree and
a cache tag, so the host's interpreter exercises it here, imports included.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import py_compile
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from orchestrator.buildspec import RECIPE_DIR
from orchestrator.matrix import Footprint

SCRIPT = RECIPE_DIR / "footprint.py"
TAG = sys.implementation.cache_tag


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("farm_footprint", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


footprint = _load()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _compile_all(stdlib: Path) -> None:
    """What the recipe's compileall step leaves: level-0 unchecked-hash pycs in __pycache__."""
    for source in stdlib.rglob("*.py"):
        py_compile.compile(
            str(source),
            cfile=str(source.parent / "__pycache__" / f"{source.stem}.{TAG}.pyc"),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )


@pytest.fixture
def stdlib(tmp_path: Path) -> Path:
    root = tmp_path / "lib" / "python3.X"
    _write(root / "datamod" / "__init__.py", "from datamod.table import TABLE\n")
    _write(root / "datamod" / "table.py", "TABLE = {'answer': 42}\n")
    _write(root / "datamod" / "sub" / "__init__.py", "def f():\n    raise ValueError('x')\n")
    _write(root / "datamod" / "style.css", "body {}\n")
    _write(root / "single.py", "VALUE = 'single'\n")
    _write(root / "tkinter" / "__init__.py", "import _tkinter\n")
    _write(root / "idlelib" / "__init__.py", "import tkinter\n")
    _write(root / "turtle.py", "import tkinter\n")
    _write(root / "curses" / "__init__.py", "import _curses\n")
    _write(root / "ensurepip" / "__init__.py", "")
    _write(root / "ensurepip" / "_bundled" / "pip-25.1-py3-none-any.whl", "wheel bytes")
    (root / "lib-dynload").mkdir()
    (root / "lib-dynload" / "_curses.cpython-3X-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    _compile_all(root)
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _import(stdlib: Path, code: str) -> subprocess.CompletedProcess[str]:
    # -B: the check must not write caches that would make sources look present.
    return subprocess.run(
        [sys.executable, "-B", "-c", f"import sys; sys.path.insert(0, {str(stdlib)!r}); {code}"],
        capture_output=True,
        text=True,
        check=False,
    )


def test_defaults_change_nothing(stdlib: Path) -> None:
    before = _snapshot(stdlib)
    report = footprint.apply(Footprint().model_dump(), stdlib, TAG)
    assert report == []
    assert _snapshot(stdlib) == before


def test_sourceless_package_and_module_still_import(stdlib: Path) -> None:
    settings = Footprint(sourceless=["datamod", "single"]).model_dump()
    report = footprint.apply(settings, stdlib, TAG)
    assert [line.split(":")[0] for line in report] == [
        "datamod as bytecode only",
        "single as bytecode only",
    ]
    assert not list((stdlib / "datamod").rglob("*.py"))
    assert not list((stdlib / "datamod").rglob("__pycache__"))
    assert (stdlib / "datamod" / "__init__.pyc").is_file()
    assert (stdlib / "datamod" / "sub" / "__init__.pyc").is_file()
    assert (stdlib / "datamod" / "style.css").is_file(), "data files stay"
    assert not (stdlib / "single.py").exists()
    assert not list((stdlib / "__pycache__").glob("single.*"))
    assert (stdlib / "single.pyc").is_file()
    # Other modules keep source and cache.
    assert (stdlib / "turtle.py").is_file()
    assert (stdlib / "__pycache__" / f"turtle.{TAG}.pyc").is_file()

    result = _import(
        stdlib,
        "import datamod, datamod.sub, single; print(datamod.TABLE['answer'], single.VALUE);"
        " print(type(datamod.__loader__).__name__)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["42", "single", "SourcelessFileLoader"]
    # A traceback through a sourceless module still names it, without its source line.
    result = _import(stdlib, "import datamod.sub; datamod.sub.f()")
    assert "ValueError: x" in result.stderr
    assert "datamod/sub/__init__.py" in result.stderr


def test_drop_unusable_removes_only_what_lacks_its_extension(stdlib: Path) -> None:
    report = footprint.apply(Footprint(drop_unusable=True).model_dump(), stdlib, TAG)
    assert sorted(line.split(" (")[0] for line in report) == [
        "dropped idlelib",
        "dropped tkinter",
        "dropped turtle",
    ]
    for gone in ("tkinter", "idlelib", "turtle.py"):
        assert not (stdlib / gone).exists()
    assert not list((stdlib / "__pycache__").glob("turtle.*"))
    # _curses was built, so curses stays.
    assert (stdlib / "curses" / "__init__.py").is_file()


def test_ensurepip_wheels_dropped(stdlib: Path) -> None:
    report = footprint.apply(Footprint(ensurepip_wheels=False).model_dump(), stdlib, TAG)
    assert report == ["dropped ensurepip wheels: 11 bytes"]
    assert not list((stdlib / "ensurepip").rglob("*.whl"))
    assert (stdlib / "ensurepip" / "__init__.py").is_file()


def test_sourceless_unknown_module_is_one_line_error(stdlib: Path, tmp_path: Path) -> None:
    settings = tmp_path / "footprint.json"
    settings.write_text(json.dumps(Footprint(sourceless=["nosuchmod"]).model_dump()))
    result = subprocess.run(
        [sys.executable, "-B", str(SCRIPT), str(settings), str(stdlib)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"footprint: sourceless: no module 'nosuchmod' in {stdlib}"
    ]


def test_sourceless_without_bytecode_fails(tmp_path: Path) -> None:
    root = tmp_path / "stdlib"
    _write(root / "plain.py", "X = 1\n")
    with pytest.raises(footprint.FootprintError, match="must be compiled before"):
        footprint.apply(Footprint(sourceless=["plain"]).model_dump(), root, TAG)
    assert (root / "plain.py").is_file()


def test_script_reports_each_action(stdlib: Path, tmp_path: Path) -> None:
    settings = tmp_path / "footprint.json"
    settings.write_text(Footprint(sourceless=["datamod"], ensurepip_wheels=False).model_dump_json())
    result = subprocess.run(
        [sys.executable, "-B", str(SCRIPT), str(settings), str(stdlib)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "footprint: dropped ensurepip wheels: 11 bytes"
    assert lines[1].startswith("footprint: datamod as bytecode only: ")


def test_settings_with_unknown_keys_rejected(tmp_path: Path) -> None:
    settings = tmp_path / "footprint.json"
    settings.write_text('{"sourceless": [], "strip_everything": true}')
    with pytest.raises(footprint.FootprintError, match="expected an object with keys"):
        footprint.load_settings(settings)


def test_footprint_model_rejects_bad_names() -> None:
    with pytest.raises(ValueError, match="listed more than once"):
        Footprint(sourceless=["encodings", "encodings"])
    with pytest.raises(ValueError):
        Footprint(sourceless=["../etc"])
