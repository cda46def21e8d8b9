"""A nightly run that skips every cell stays cheap: it never loads what only a build needs.

Not a timed assertion (timings are docs/BENCHMARKS.md (a)): the no-op run's modules are read
from a separate interpreter, so a heavy import added to the skip path fails here. The SBOM
library's JSON validator alone compiles 39 lark grammars on import (about 3 s on 2 cores).
The engine is a stand-in answering image lookups (unit tests never touch Docker); everything
else is the real command: matrix, renders, fingerprints, the local store's manifest, the
summary and the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator import engine
from orchestrator.buildspec import build_spec, installed_recipe_digest
from orchestrator.engine import EnginePool
from orchestrator.fingerprint import fingerprint, fingerprint_inputs
from orchestrator.layout import Layout
from orchestrator.matrix import Matrix, load_matrix
from orchestrator.nightly import Nightly, NightlyOptions
from orchestrator.prepare import BuildOptions
from orchestrator.progress import PlainReporter
from orchestrator.publish.manifests import manifest_key
from orchestrator.publish.store import RUN_LOCK_FILE, DirectoryStore, sha256_hex
from orchestrator.render import render_stack
from tests.publish_support import published_entry

# Top-level packages (and farm modules) only a build, an SBOM, a signature check, S3 or a
# verification needs. The local store is the default target, so boto3 is on this list.
HEAVY = (
    "cyclonedx",
    "jsonschema",
    "lark",
    "rfc3987_syntax",
    "sigstore",
    "sigstore_models",
    "boto3",
    "botocore",
    "s3transfer",
    "elftools",
    "orchestrator.build",
    "orchestrator.publish.cyclonedx_sbom",
    "orchestrator.publish.s3store",
    "orchestrator.sources.fetch",
    "orchestrator.sources.signatures",
    "orchestrator.verify",
)

# Runs in a fresh interpreter: the engine answers image lookups with an id derived from the
# image name (the same as _image_id below), then the real CLI runs and the interpreter's
# modules are written to $MODULES_OUT.
_RUN = """
import hashlib, json, os, sys
from types import SimpleNamespace

import orchestrator.engine

def _image_id(ref):
    return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()

client = SimpleNamespace(images=SimpleNamespace(get=lambda ref: SimpleNamespace(id=_image_id(ref))))
orchestrator.engine.connect = lambda base_url=None, **kw: client

from orchestrator.cli import main

code = main(sys.argv[1:])
with open(os.environ["MODULES_OUT"], "w") as handle:
    json.dump({"code": code, "modules": sorted(sys.modules)}, handle)
"""


def _image_id(ref: str) -> str:
    return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()


def _fake_client() -> Any:
    return SimpleNamespace(
        images=SimpleNamespace(get=lambda ref: SimpleNamespace(id=_image_id(ref)))
    )


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def _modules_after(code: str, *args: str, env: dict[str, str] | None = None) -> Any:
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture
def project(tmp_path: Path, repo_root: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(repo_root / "matrix.yaml", project / "matrix.yaml")
    shutil.copytree(repo_root / "templates", project / "templates")
    shutil.copytree(repo_root / "dockerfiles", project / "dockerfiles")
    return project


def _prepare_all(matrix: Matrix, out: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    monkeypatch.setattr(engine, "connect", lambda base_url=None, **kw: _fake_client())
    runner = Nightly(
        matrix,
        engines=EnginePool(),
        layout=Layout(out_dir=out),
        options=NightlyOptions(build=BuildOptions(), jobs=1),
        reporter=PlainReporter(),
        publisher=None,
    )
    prepared, failed = runner.prepare(matrix.select([]))
    assert failed == []
    return prepared


@pytest.mark.parametrize(
    "module", ["orchestrator.cli", "orchestrator.nightly", "orchestrator.prepare"]
)
def test_importing_the_cli_and_the_nightly_loads_nothing_heavy(module: str) -> None:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    modules = json.loads(_modules_after(code).stdout)
    assert module in modules
    assert _heavy(modules) == []


def test_sbom_library_loads_only_when_an_sbom_is_written() -> None:
    code = (
        "import json, sys\n"
        "from orchestrator.publish.sbom import SBOM_FORMAT, sbom_name, validate_sbom\n"
        "before = 'cyclonedx' in sys.modules\n"
        "try:\n"
        "    validate_sbom('{}', what='x')\n"
        "except Exception as exc:\n"
        "    print(json.dumps([before, 'cyclonedx' in sys.modules, type(exc).__name__]))\n"
    )
    # The check itself still runs, with the real library: an empty document is refused.
    assert json.loads(_modules_after(code).stdout) == [False, True, "PackagingError"]


def test_a_nightly_that_skips_every_cell_loads_nothing_heavy(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    matrix = load_matrix(project / "matrix.yaml")
    out = tmp_path / "out"
    prepared = _prepare_all(matrix, out, monkeypatch)
    # The whole shipped matrix as a nightly takes it (CPU level cells are opt-in).
    assert len(prepared) == len(matrix.select([])) > 100
    # Everything published: the manifest a finished nightly leaves, in the local store.
    runtimes = [published_entry(p.cell, p.fingerprint) for p in prepared]
    body = json.dumps({"format": 1, "runtimes": runtimes}).encode()
    store = DirectoryStore(out / "publish")
    store.put(manifest_key(""), body, sha256=sha256_hex(body), content_type="application/json")

    def written() -> dict[Path, int]:
        # Every file under --out; the run's lock (one nightly per store) is not an object.
        return {
            p: p.stat().st_mtime_ns
            for p in out.rglob("*")
            if p.is_file() and p.name != RUN_LOCK_FILE
        }

    files_before = written()

    report, modules_out = tmp_path / "report.json", tmp_path / "modules.json"
    args = ["--matrix", str(project / "matrix.yaml"), "--out", str(out), "nightly",
            "--report", str(report)]  # fmt: skip
    env = {"MODULES_OUT": str(modules_out)}
    for name in [k for k in os.environ if k.startswith(("FARM_PUBLISH_", "GITHUB_"))]:
        env[name] = ""  # the local store, plain output
    _modules_after(_RUN, *args, env=env)

    run = json.loads(modules_out.read_text())
    assert run["code"] == 0
    outcomes = json.loads(report.read_text())
    assert outcomes["counts"]["skipped"] == len(prepared)
    assert outcomes["counts"]["built"] == outcomes["counts"]["failed"] == 0
    # The path really ran (matrix, renders, fingerprints, manifest), and nothing heavy came.
    for needed in ("orchestrator.nightly", "orchestrator.render", "orchestrator.publish.store"):
        assert needed in run["modules"]
    assert _heavy(run["modules"]) == []
    # Nothing in the store (or anywhere under --out but the report's own file) was written.
    assert written() == files_before


def test_planning_gives_the_fingerprints_of_a_fresh_computation(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nightly planning computes cells, renders and image plans once per matrix, stack and
    image; every cell's fingerprint must still be what computing it alone gives."""
    matrix = load_matrix(project / "matrix.yaml")
    prepared = _prepare_all(matrix, tmp_path / "out", monkeypatch)
    for item in prepared:
        cell = item.cell
        alone = load_matrix(project / "matrix.yaml")  # nothing cached
        dockerfile = render_stack(alone, cell.stack_name)
        inputs = fingerprint_inputs(
            build_spec(alone, alone.cell(cell.id), None),
            recipe_version=alone.model.recipe_version,
            dockerfile_sha256=hashlib.sha256(dockerfile.encode()).hexdigest(),
            base_image_id=_image_id(cell.stack.image_for(cell.arch)),
            recipe_sha256=installed_recipe_digest(),
        )
        assert item.fingerprint_inputs == inputs, cell.id
        assert item.fingerprint == fingerprint(inputs), cell.id


# Fingerprints of the shipped matrix with the outside inputs held fixed, as computed before
# the no-op nightly was made fast (issue 18): a change here rebuilds every published runtime
# it touches, so it must be deliberate (then update the pins in the same commit).
FIXED = {
    "recipe_version": 1,
    "dockerfile_sha256": "d" * 64,
    "base_image_id": "sha256:" + "b" * 64,
    "recipe_sha256": "r" * 64,
}
PINNED = {
    (
        "3.13.5-debian-12-amd64",
        "fast",
    ): "65db14aee1a9b38c11efaefff91b70cde8d87c9d0fe4dabb3b4a106333ffa5ed",
    (
        "3.13.5-debian-12-amd64",
        "release",
    ): "1fec7d658e4871c13db2d136326e4c1f819ccf8f7b06007f9af24d52626d3c36",
    (
        "3.13.5t-debian-13-arm64",
        "release",
    ): "8c8fd76838b6e67b8970c5cd1a8a96db71a60763e40a364793e2bfa72c8c9f77",
    (
        "3.14.10-debian-13-amd64",
        "release",
    ): "57dd6ca98ebb3d71219a9e00a68a289a84592b1e3eb285fb868c7b674bc4bc75",
    (
        "3.11.2-ubuntu-20.04-amd64",
        "slim",
    ): "6397401b699ee51282da073e9f39050946379806f65f6cd0200aba254a152710",
}


@pytest.mark.parametrize(("cell_id", "profile"), sorted(PINNED))
def test_fingerprints_are_pinned(repo_root: Path, cell_id: str, profile: str) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    spec = build_spec(matrix, matrix.cell(cell_id), profile)
    assert fingerprint(fingerprint_inputs(spec, **FIXED)) == PINNED[cell_id, profile]  # type: ignore[arg-type]


def test_a_cell_to_build_loads_the_pipeline_and_retries_infrastructure_errors(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side of the lazy imports: a cell that is not published reaches build_cell
    (imported when a cell is built), and an engine error is retried as before."""
    import orchestrator.build
    from orchestrator.errors import DockerError

    matrix = load_matrix(project / "matrix.yaml")
    monkeypatch.setattr(engine, "connect", lambda base_url=None, **kw: _fake_client())
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # tenacity's backoff
    calls: list[str] = []

    def build_cell(matrix: Matrix, cell: Any, **kwargs: Any) -> Any:
        calls.append(cell.id)
        if len(calls) == 1:
            raise DockerError("engine went away")
        return SimpleNamespace(archive=SimpleNamespace(size=1, sha256="0" * 64))

    monkeypatch.setattr(orchestrator.build, "build_cell", build_cell)
    messages: list[str] = []
    reporter = PlainReporter()
    monkeypatch.setattr(reporter, "message", messages.append)
    runner = Nightly(
        matrix,
        engines=EnginePool(),
        layout=Layout(out_dir=tmp_path / "out"),
        options=NightlyOptions(build=BuildOptions(), jobs=1),
        reporter=reporter,
        publisher=None,
    )
    monkeypatch.setattr(runner, "_ensure_images", lambda todo: {})  # no image builds here
    outcomes = runner.run([matrix.cell("3.13.5-debian-12-amd64")])
    assert [(o.cell, o.result) for o in outcomes] == [("3.13.5-debian-12-amd64", "built")]
    assert calls == ["3.13.5-debian-12-amd64"] * 2
    assert any("retrying: engine went away" in m for m in messages)
