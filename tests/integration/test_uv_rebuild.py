"""A rebuilt runtime reaches uv users as an upgrade: publish the end-to-end runtime, rebuild the
cell from changed inputs, replace it with --force, and `uv python upgrade` (the real uv,
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
    project_copy: Path,
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    s3_server.allow_anonymous_reads(s3_bucket)
    env = s3_server.env()
    target = ["--bucket", s3_bucket, "--endpoint-url", s3_server.endpoint_url]
    first_out = tmp_path / "first"
    shutil.copytree(e2e_build.out_dir / "artifacts", first_out / "artifacts")
    published = run_cli(["--out", str(first_out), "publish", E2E_CELL, *target], env=env)
    assert published.returncode == 0, published.stderr
    uv_env = {
        **env,
        "UV_PYTHON_DOWNLOADS_JSON_URL": s3_server.object_url(
            s3_bucket, "debian-12/amd64/download-metadata.json"
        ),
    }
    installed = _uv(tmp_path, uv_env, "python", "install", "3.13.5")
    assert installed.returncode == 0, installed.stderr
    first_build = json.loads(e2e_build.metadata.read_text())["built_at"]
    build_file = next((tmp_path / "pythons").glob("cpython-3.13.5-*/BUILD"))
    assert build_file.read_text().strip() == re.sub(r"\D", "", first_build)

    # The rebuild: a new recipe_version, and a footprint change so the bytes differ too
    # (a rebuild with unchanged bytes is republished as a no-op that keeps its build).
    matrix = project_copy / "matrix.yaml"
    text = matrix.read_text()
    text = re.sub(
        r"^recipe_version: (\d+)", lambda m: f"recipe_version: {int(m[1]) + 1}", text, flags=re.M
    )
    text, count = re.subn(
        r"^(  fast:\n(?:    .*\n)*?    lto: false\n)",
        r"\1    footprint:\n      sourceless: [pydoc_data]\n",
        text,
        flags=re.M,
    )
    assert count == 1
    text = text.replace(
        "cache_dir: .cache/sources", f"cache_dir: {REPO_ROOT / '.cache' / 'sources'}"
    )
    matrix.write_text(text)
    second_out = tmp_path / "second"
    rebuilt = run_cli(
        ["--matrix", str(matrix), "--out", str(second_out), "build", E2E_CELL, "--profile", "fast",
         "--quiet", "--publish", "--force", *target],
        env=env,
    )  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert "replaced" in rebuilt.stdout
    record = json.loads((second_out / "artifacts" / e2e_build.metadata.name).read_text())
    assert record["sha256"] != json.loads(e2e_build.metadata.read_text())["sha256"]
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

    upgraded = _uv(tmp_path, uv_env, "python", "upgrade", "3.13")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"~ {UV_KEY}" in upgraded.stderr  # uv's mark for a reinstalled (upgraded) build
    assert build_file.read_text().strip() == uv_doc[UV_KEY]["build"]
    # And it is really the rebuild that is installed now: pydoc_data ships as bytecode only.
    stdlib = build_file.parent / "lib" / "python3.13"
    assert (stdlib / "pydoc_data" / "topics.pyc").is_file()
    assert not (stdlib / "pydoc_data" / "topics.py").exists()
    again = _uv(tmp_path, uv_env, "python", "upgrade", "3.13")
    assert again.returncode == 0 and "already on the latest" in again.stderr
