"""The slim profile's footprint on a real build: smaller, still whole, and verified.

The build uses slim's footprint settings with the fast profile's compiler settings (no PGO/LTO),
so CI pays ~4 min rather than ~29; the footprint step does not depend on how CPython was compiled.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from docker import DockerClient

from tests.integration.support import E2E_CELL, E2EBuild

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def _record(out: Path) -> dict[str, object]:
    record = json.loads((out / "artifacts" / "python-3.13.5-debian-12-amd64.json").read_text())
    assert isinstance(record, dict)
    return record


def test_slim_passes_full_verification(slim_build: Path) -> None:
    verification = _record(slim_build)["verification"]
    assert isinstance(verification, dict)
    assert verification["ok"] is True, verification["failures"]
    log = (slim_build / "logs" / f"{E2E_CELL}.log").read_text()
    assert "footprint: encodings as bytecode only" in log
    assert "footprint: dropped tkinter (no _tkinter)" in log
    # Without the wheel, verification says it skipped the venv+pip check rather than passing it.
    verify_log = (slim_build / "logs" / f"{E2E_CELL}.verify.log").read_text()
    assert "CHECK venv:pip skip no ensurepip wheel in the runtime" in verify_log


def test_slim_tree_is_reshaped_and_smaller(slim_build: Path, e2e_build: E2EBuild) -> None:
    stdlib = slim_build / "work" / E2E_CELL / "prefix" / "lib" / "python3.13"
    assert not list((stdlib / "encodings").glob("*.py"))
    assert (stdlib / "encodings" / "__init__.pyc").is_file()
    assert (stdlib / "pydoc_data" / "topics.pyc").is_file()
    assert not (stdlib / "tkinter").exists() and not (stdlib / "idlelib").exists()
    assert not list(stdlib.glob("ensurepip/_bundled/*.whl"))
    assert (stdlib / "curses" / "__init__.py").is_file(), "_curses is built: curses stays"

    slim, fast = _record(slim_build), json.loads(e2e_build.metadata.read_text())
    slim_sizes, fast_sizes = slim["sizes"], fast["sizes"]
    assert isinstance(slim_sizes, dict) and isinstance(fast_sizes, dict)
    assert slim_sizes["total"] < fast_sizes["total"] - 5_000_000
    assert slim_sizes["stdlib_py"] < fast_sizes["stdlib_py"]
    assert isinstance(slim["size"], int)
    assert slim["size"] < e2e_build.archive.stat().st_size - 1_000_000
    # libpython and extension modules are untouched by the footprint step.
    assert slim_sizes["libpython"] == fast_sizes["libpython"]
    assert slim_sizes["lib_dynload"] == fast_sizes["lib_dynload"]


def test_slim_runtime_uses_its_bytecode_only_modules(
    slim_build: Path, docker_client: DockerClient, run_image_debian12: str
) -> None:
    archive = slim_build / "artifacts" / "python-3.13.5-debian-12-amd64.tar.zst"
    probe = (
        "import encodings.idna, pydoc_data.topics as t, sys; "
        "print(type(encodings.idna.__loader__).__name__, 'if' in t.topics)"
    )
    script = (
        "set -e; mkdir /rt; tar --zstd -xf /archive.tar.zst -C /rt; "
        f'/rt/bin/python3 -c "{probe}"; '
        "/rt/bin/python3 -m venv --without-pip /tmp/venv && /tmp/venv/bin/python -c 'print(1)'; "
        "/rt/bin/python3 -m venv /tmp/venv-pip 2>&1 | tail -1 || true"
    )
    output = docker_client.containers.run(
        run_image_debian12,
        ["bash", "-c", script],
        volumes={str(archive): {"bind": "/archive.tar.zst", "mode": "ro"}},
        network_disabled=True,
        remove=True,
    ).decode()
    lines = output.strip().splitlines()
    assert lines[0] == "SourcelessFileLoader True"
    assert lines[1] == "1", "venv --without-pip works"
    # The documented trade-off: a venv with pip fails at ensurepip, saying so.
    assert "ensurepip" in lines[2] and "non-zero exit status" in lines[2], lines[2:]
