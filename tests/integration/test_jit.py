"""The experimental JIT on a real build: 3.13.5 on debian-13 amd64 (trixie has LLVM 18),
fast profile with `jit: true`, built once per session and verified, PYTHON_JIT=1 checks
included; and the JIT probe telling a runtime without the JIT apart."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker import DockerClient

from orchestrator.verify.runtime import _run_stage
from tests.integration.support import REPO_ROOT, E2EBuild, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

JIT_CELL = "3.13.5-debian-13-amd64"
STEM = "python-3.13.5-debian-13-amd64"


@pytest.fixture(scope="session")
def jit_build(tmp_path_factory: pytest.TempPathFactory, docker_client: DockerClient) -> Path:
    """OUT dir of the one JIT build of the session: fast's compiler settings plus `jit: true`.
    The rendered Dockerfiles are the repository's: release (auto) already puts LLVM 18 in
    debian-13's builder image, so this profile changes no image."""
    project = tmp_path_factory.mktemp("jit-project")
    data = yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text())
    data["profiles"]["fast"]["jit"] = True
    data["sources"]["cache_dir"] = str(REPO_ROOT / ".cache" / "sources")
    (project / "matrix.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    for directory in ("templates", "dockerfiles", "keys"):
        (project / directory).symlink_to(REPO_ROOT / directory)
    out = tmp_path_factory.mktemp("jit-out")
    result = run_cli(
        ["--matrix", str(project / "matrix.yaml"), "--out", str(out), "build", JIT_CELL,
         "--profile", "fast", "--quiet"]
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"JIT build failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return out


def _record(out: Path) -> dict[str, Any]:
    record = json.loads((out / "artifacts" / f"{STEM}.json").read_text())
    assert isinstance(record, dict)
    return record


def _checks(verify_log: str) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for line in verify_log.splitlines():
        match = re.match(r"^CHECK (\S+) (ok|fail|skip) ?(.*)$", line)
        if match:
            found[match.group(1)] = (match.group(2), match.group(3))
    return found


def test_jit_runtime_is_recorded_and_verified(jit_build: Path) -> None:
    record = _record(jit_build)
    assert record["jit"] is True
    assert record["configure_args"][-1] == "--enable-experimental-jit=yes-off"
    assert record["fingerprint_inputs"]["jit"] is True
    verification = record["verification"]
    assert verification["ok"] is True, verification["failures"]
    build_log = (jit_build / "logs" / f"{JIT_CELL}.log").read_text()
    assert "checking for --enable-experimental-jit... -D_Py_TIER2=3 -D_Py_JIT" in build_log


def test_jit_is_off_by_default_and_compiles_under_python_jit(jit_build: Path) -> None:
    checks = _checks((jit_build / "logs" / f"{JIT_CELL}.verify.log").read_text())
    status, detail = checks["jit:off"]
    assert status == "ok", detail
    assert re.search(r"PYTHON_JIT=\(unset\): 0 executor\(s\), 0 with machine code", detail)
    status, detail = checks["jit:on"]
    assert status == "ok", detail
    match = re.search(r"PYTHON_JIT=1: (\d+) executor\(s\), (\d+) with machine code", detail)
    assert match and int(match.group(2)) >= 1, detail


def test_runtime_checks_rerun_with_the_jit_on(jit_build: Path) -> None:
    checks = _checks((jit_build / "logs" / f"{JIT_CELL}.verify.log").read_text())
    record = _record(jit_build)
    for module in record["expected_modules"]:
        assert checks[f"jit:import:{module}"][0] == "ok", (module, checks[f"jit:import:{module}"])
        assert checks[f"import:{module}"][0] == "ok"
    for name in ("roundtrip:sqlite3", "roundtrip:lzma", "roundtrip:bz2", "roundtrip:zlib",
                 "recursion:thread"):  # fmt: skip
        assert checks[f"jit:{name}"][0] == "ok", (name, checks[f"jit:{name}"])


def test_probe_sees_no_jit_in_a_runtime_built_without_it(
    e2e_build: E2EBuild, docker_client: DockerClient, run_image_debian12: str
) -> None:
    """The default build's runtime through the jit stage: jit:off and jit:on must fail, saying
    the JIT is not built in (the probe cannot pass on a runtime without it)."""
    from orchestrator.matrix import Arch

    log = io.StringIO()
    output = _run_stage(
        docker_client,
        stage="jit",
        image=run_image_debian12,
        archive=e2e_build.archive,
        arch=Arch.AMD64,
        major_minor="3.13",
        modules=["json"],
        cell_id="jit-probe-negative",
        copy=False,
        log=log,
    )
    results = {check.name: check for check in output.checks}
    for name in ("jit:off", "jit:on"):
        assert not results[name].ok, results[name]
        assert "the JIT is not built in" in results[name].detail, results[name]
    assert results["jit:import:json"].ok  # the wrapper itself runs the runtime
