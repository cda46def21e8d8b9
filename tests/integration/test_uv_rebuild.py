"""A rebuilt runtime reaches uv users as an upgrade: publish a runtime, replace it with --force
by a rebuild of the same cell from changed inputs, and `uv python upgrade` (the real uv,
reading our download-metadata.json over HTTP) installs the rebuild because its build number
is higher (uv compares builds numerically: crates/uv-python/src/managed.rs
compare_build_versions, used by `python upgrade` in crates/uv/src/commands/python/install.rs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import E2E_CELL, REPO_ROOT, E2EBuild, run_cli
from tests.s3.harness import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

UV_KEY = "cpython-3.13.5-linux-x86_64-gnu"


def _uv(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    uv = shutil.which("uv", path=str(REPO_ROOT / ".venv" / "bin")) or shutil.which("uv")
    assert uv is not None, "uv is a dev dependency of the project"
    return subprocess.run(
        [uv, *args],
        env={
            **os.environ,
            **env,
            "UV_PYTHON_INSTALL_DIR": str(tmp_path / "pythons"),
            "UV_PYTHON_BIN_DIR": str(tmp_path / "bin"),
            "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
            "UV_PYTHON_PREFERENCE": "only-managed",
            "UV_NO_CONFIG": "1",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_rebuild_is_installed_as_the_newer_build(
    e2e_build: E2EBuild,
    slim_build: Path,
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    """The two builds of the cell this session makes anyway are the original and the rebuild:
    the end-to-end build, and the slim-footprint build (another profile: changed inputs,
    other bytes). The one built first is published first."""

    def record(out: Path) -> dict[str, Any]:
        return dict(json.loads((out / "artifacts" / e2e_build.metadata.name).read_text()))

    builds = sorted([e2e_build.out_dir, slim_build], key=lambda out: record(out)["built_at"])
    records = [record(out) for out in builds]
    assert records[0]["sha256"] != records[1]["sha256"]
    assert records[0]["fingerprint"] != records[1]["fingerprint"]
    s3_server.allow_anonymous_reads(s3_bucket)
    env = s3_server.env()
    target = ["--bucket", s3_bucket, "--endpoint-url", s3_server.endpoint_url]
    published = run_cli(["--out", str(builds[0]), "publish", E2E_CELL, *target], env=env)
    assert published.returncode == 0, published.stderr
    uv_env = {
        **env,
        "UV_PYTHON_DOWNLOADS_JSON_URL": s3_server.object_url(
            s3_bucket, "debian-12/amd64/download-metadata.json"
        ),
    }
    installed = _uv(tmp_path, uv_env, "python", "install", "3.13.5")
    assert installed.returncode == 0, installed.stderr
    build_file = next((tmp_path / "pythons").glob("cpython-3.13.5-*/BUILD"))
    assert build_file.read_text().strip() == re.sub(r"\D", "", records[0]["built_at"])

    # The rebuild replaces the published runtime (--force, recorded) ...
    replaced = run_cli(["--out", str(builds[1]), "publish", E2E_CELL, "--force", *target], env=env)
    assert replaced.returncode == 0, replaced.stderr
    assert replaced.stdout.startswith("replaced")
    uv_doc = json.loads(
        s3_server.client()
        .get_object(Bucket=s3_bucket, Key="debian-12/amd64/download-metadata.json")["Body"]
        .read()
    )
    assert int(uv_doc[UV_KEY]["build"]) > int(build_file.read_text())
    # Clients must revalidate the metadata, or uv would keep its copy for 10 minutes.
    head = s3_server.client().head_object(
        Bucket=s3_bucket, Key="debian-12/amd64/download-metadata.json"
    )
    assert head["CacheControl"] == "no-cache"

    # ... and uv sees it as newer and installs it.
    upgraded = _uv(tmp_path, uv_env, "python", "upgrade", "3.13")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"~ {UV_KEY}" in upgraded.stderr  # uv's mark for a reinstalled (upgraded) build
    assert build_file.read_text().strip() == uv_doc[UV_KEY]["build"]
    stdlib = build_file.parent / "lib" / "python3.13"
    slim_installed = not (stdlib / "pydoc_data" / "topics.py").exists()
    assert slim_installed == (builds[1] == slim_build)  # the rebuild's own files
    again = _uv(tmp_path, uv_env, "python", "upgrade", "3.13")
    assert again.returncode == 0 and "already on the latest" in again.stderr
