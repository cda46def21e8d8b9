"""A build container killed by its memory limit: the cell fails with "out of memory", no
artifact, no container left; the cell beside it in the same nightly run completes.

Memory is a per-run limit (`--memory`), and a fast CPython compile stays near 300 MB, under
the smallest limit the CLI accepts (0.5 GB). So one cell of the run gets a source whose
`configure` holds 4 GiB, the way a compile needing more than its share would: a real
container, the real limit, the kernel's OOM killer. The other cell is the real 3.13.5 build.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker import DockerClient

from orchestrator.cellbuild import CELL_LABEL, ROLE_LABEL, leftover_containers
from tests.integration.support import REPO_ROOT, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

REAL = "3.13.5-debian-12-amd64"
HOG_VERSION = "3.13.99"
HOG = f"{HOG_VERSION}-debian-12-amd64"
GIB = 1024**3

HOG_CONFIGURE = b"""#!/bin/sh
# Stands in for a compile that needs more memory than its container has.
set -e
echo "configure: holding 4 GiB"
head -c 4G /dev/zero | tail -n 1 >/dev/null
echo "configure: still alive, the memory limit did not hold"
"""


def _hog_tarball(mirror: Path) -> str:
    """Python-3.13.99.tar.xz whose configure runs out of memory; returns its sha256."""
    mirror.mkdir(parents=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, body, mode in [
            (f"Python-{HOG_VERSION}", None, 0o755),
            (f"Python-{HOG_VERSION}/configure", HOG_CONFIGURE, 0o755),
        ]:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 1_750_000_000, mode
            if body is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    (mirror / f"Python-{HOG_VERSION}.tar.xz").write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def _matrix(project: Path, tmp_path: Path) -> Path:
    """The repo's matrix (so the builder image is the e2e one) plus the hog version, served
    by a local mirror; its own source cache, seeded with the real tarball when there is one."""
    path = project / "matrix.yaml"
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    mirror = tmp_path / "mirror"
    data["pythons"].append({"version": HOG_VERSION, "sha256": _hog_tarball(mirror)})
    sources = data["sources"]
    sources["mirrors"] = [f"file://{mirror}/{{filename}}", *sources["mirrors"]]
    cache = tmp_path / "cache"
    cache.mkdir()
    for seed in (REPO_ROOT / ".cache" / "sources").glob("Python-3.13.5.tar.xz*"):
        shutil.copy(seed, cache / seed.name)
    sources["cache_dir"] = str(cache)
    # Upstream never signed a 3.13.99: keep the release manager's key to the real versions.
    for signer in data["signatures"]["openpgp"]:
        if signer["python"] == ">=3.12,<3.14":
            signer["python"] = f">=3.12,<{HOG_VERSION}"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    rendered = run_cli(["--matrix", str(path), "render"])
    assert rendered.returncode == 0, rendered.stderr
    return path


def test_out_of_memory_fails_one_cell_and_the_other_completes(
    project_copy: Path, tmp_path: Path, docker_client: DockerClient
) -> None:
    matrix = _matrix(project_copy, tmp_path)
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    # Output to a file: a pipe nobody reads while the loop below polls could fill and block.
    stderr_file = (tmp_path / "stderr").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "--matrix", str(matrix), "--out", str(out),
         "nightly", REAL, HOG, "--profile", "fast", "--no-publish", "--jobs", "2", "--memory", "1",
         "--report", str(report)],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=stderr_file, text=True,
    )  # fmt: skip
    # The limit as the engine holds it: 1 GiB of memory and no swap beyond it.
    seen: dict[str, tuple[int, int]] = {}
    try:
        deadline = time.monotonic() + 1800
        while process.poll() is None and time.monotonic() < deadline:
            for container in leftover_containers(docker_client, owner_pid=process.pid):
                if container.labels.get(ROLE_LABEL) == "build":  # not the verify containers
                    host = container.attrs["HostConfig"]
                    seen[container.labels[CELL_LABEL]] = (host["Memory"], host["MemorySwap"])
            time.sleep(1)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        stderr_file.close()
    stderr = (tmp_path / "stderr").read_text()

    assert process.returncode == 11, stderr[-3000:]
    assert seen.get(HOG) == (GIB, GIB), seen
    assert seen.get(REAL) == (GIB, GIB), seen
    cells = {c["cell"]: c for c in json.loads(report.read_text())["cells"]}
    assert cells[REAL]["result"] == "built", cells[REAL]
    assert cells[HOG]["result"] == "failed"
    reason = cells[HOG]["reason"]
    assert "\n" not in reason and "ran out of memory in phase 'configure'" in reason, reason
    assert "1.0 GiB limit" in reason
    # One line per cell as it finishes, and the run's one error line at the end.
    assert any(
        f"[{HOG}] failed" in line and "out of memory" in line for line in stderr.splitlines()
    )
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and HOG in errors[0] and "Traceback" not in stderr, stderr[-3000:]
    artifacts = sorted(p.name for p in (out / "artifacts").iterdir())
    assert artifacts and all(name.startswith("python-3.13.5-") for name in artifacts), artifacts
    assert leftover_containers(docker_client, owner_pid=process.pid) == []
    assert "holding 4 GiB" in (out / "logs" / f"{HOG}.log").read_text()
    assert "still alive" not in (out / "logs" / f"{HOG}.log").read_text()
