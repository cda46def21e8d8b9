"""The SBOM of the real end-to-end runtime: valid CycloneDX, naming CPython's source sha256,
what the tarball vendors, and the run image's packages with the versions installed there;
published beside the archive and pointed at by both manifests' documents."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from orchestrator.publish.sbom import sbom_name
from tests.integration.support import E2E_CELL, E2EBuild, run_cli

pytestmark = pytest.mark.integration

SOURCE_SHA256 = "93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640"


def test_sbom_of_the_real_runtime(e2e_build: E2EBuild) -> None:
    record = json.loads(e2e_build.metadata.read_text())
    path = e2e_build.archive.with_name(sbom_name(e2e_build.archive.name))
    text = path.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    assert record["sbom"]["file"] == path.name
    document = json.loads(text)
    assert document["metadata"]["component"]["hashes"][0]["content"] == record["sha256"]
    components = {c["bom-ref"]: c for c in document["components"]}
    assert components["cpython"]["hashes"][0]["content"] == SOURCE_SHA256
    # What 3.13.5 vendors and the fast profile ships (the bundled expat is what pyexpat uses).
    assert {"bundled:expat", "bundled:mpdecimal", "bundled:hacl-star", "bundled:pip"} <= set(
        components
    )
    assert components["bundled:expat"]["version"] == "2.7.1"
    # Every package the runtime links, with the version the run image has.
    assert "libssl3" in record["runtime_packages"]
    for package in record["runtime_packages"]:
        component = components[f"deb:{package}"]
        assert component["version"] == record["run_image_packages"][package]
        assert component["purl"].startswith(f"pkg:deb/debian/{package}@")
    assert "deb:tzdata" in components  # a stack package the runtime does not link


def test_published_sbom_is_referenced_and_checked(e2e_build: E2EBuild, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(e2e_build.out_dir / "artifacts", out / "artifacts")
    published = run_cli(["--out", str(out), "publish", E2E_CELL])
    assert published.returncode == 0, published.stderr
    store = out / "publish"
    sbom = store / sbom_name(e2e_build.archive.name)
    assert sbom.read_bytes() == e2e_build.archive.with_name(sbom.name).read_bytes()
    entry = json.loads((store / "manifest.json").read_text())["runtimes"][0]
    assert entry["sbom_url"] == sbom.as_uri()
    assert entry["source"]["verified_by"] == ["sha256", "openpgp"]
    assert entry["build"].isdigit() and len(entry["build"]) == 14
    checked = run_cli(["--out", str(out), "check-manifest", E2E_CELL])
    assert checked.returncode == 0, checked.stderr
    sbom.unlink()
    broken = run_cli(["--out", str(out), "check-manifest", E2E_CELL])
    assert broken.returncode == 10 and f"missing {sbom.name}" in broken.stderr
