"""Nightly over a small Debian matrix, on the real engine and a real S3 server (moto, HTTP).

One scenario, in order (each step depends on the previous):
1. first run builds and publishes both cells;
2. second run skips both and starts no container (asked of the engine, not our counters)
   and writes nothing to the bucket;
3. one input of one stack changes; a run is interrupted with SIGTERM mid-build: no container
   is left, nothing in the bucket changed;
4. the next run rebuilds only the affected cell;
5. --force on one cell rebuilds it although its fingerprint is unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker import DockerClient

from orchestrator.cellbuild import OWNER_LABEL, leftover_containers, owner
from tests.integration.support import REPO_ROOT, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CELLS = ["3.13.5-debian-12-amd64", "3.13.5-debian-13-amd64"]


def _small_matrix(project: Path) -> None:
    path = project / "matrix.yaml"
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    data["pythons"] = [p for p in data["pythons"] if p["version"] == "3.13.5"]
    data["arches"] = ["amd64"]
    data["stacks"] = {k: v for k, v in data["stacks"].items() if k.startswith("debian-")}
    data["excludes"] = []
    data.pop("variants", None)  # default variant only: two cells (free-threaded: test_freethreaded)
    data["default_profile"] = "fast"
    data["sources"]["cache_dir"] = str(REPO_ROOT / ".cache" / "sources")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    rendered = run_cli(["--matrix", str(path), "render"])
    assert rendered.returncode == 0, rendered.stderr


def _creates(client: DockerClient, since: float, until: float, pid: int) -> list[Any]:
    return list(
        client.events(
            since=int(since),
            until=int(until) + 1,
            decode=True,
            filters={
                "type": "container",
                "event": "create",
                "label": f"{OWNER_LABEL}={owner(pid)}",
            },
        )
    )


def _objects(s3: Any, bucket: str) -> dict[str, tuple[str, Any]]:
    listing = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: (o["ETag"], o["LastModified"]) for o in listing}


def _report(path: Path) -> dict[str, str]:
    return {c["cell"]: c["result"] for c in json.loads(path.read_text())["cells"]}


def test_nightly_skips_rebuilds_and_survives_sigterm(
    project_copy: Path,
    tmp_path: Path,
    docker_client: DockerClient,
    s3_server: Any,
    s3_bucket: str,
) -> None:
    _small_matrix(project_copy)
    out = tmp_path / "out"
    env = {**s3_server.env(), "FARM_PUBLISH_BUCKET": s3_bucket,
           "FARM_PUBLISH_ENDPOINT_URL": s3_server.endpoint_url}  # fmt: skip
    base = ["--matrix", str(project_copy / "matrix.yaml"), "--out", str(out), "nightly"]
    s3 = s3_server.client()

    # 1. Everything is new: both cells are built and published.
    first = run_cli([*base, "--jobs", "2", "--report", str(tmp_path / "r1.json")], env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _report(tmp_path / "r1.json") == dict.fromkeys(CELLS, "built")
    manifest = json.loads(s3.get_object(Bucket=s3_bucket, Key="manifest.json")["Body"].read())
    assert sorted(r["name"] for r in manifest["runtimes"]) == [
        "python-3.13.5-debian-12-amd64.tar.zst",
        "python-3.13.5-debian-13-amd64.tar.zst",
    ]

    # 2. Nothing changed: no container, no upload.
    before = _objects(s3, s3_bucket)
    started = time.time()
    second = run_cli([*base, "--report", str(tmp_path / "r2.json")], env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert _report(tmp_path / "r2.json") == dict.fromkeys(CELLS, "skipped")
    assert _creates(docker_client, started, time.time(), second.pid) == []
    assert _objects(s3, s3_bucket) == before

    # 3. One stack's input changes (its rendered Dockerfile), and the run gets SIGTERM.
    matrix = project_copy / "matrix.yaml"
    data = yaml.safe_load(matrix.read_text())
    data["stacks"]["debian-13"]["run_packages"] = [
        *data["stacks"]["debian-13"]["run_packages"],
        "less",
    ]
    matrix.write_text(yaml.safe_dump(data, sort_keys=False))
    assert run_cli(["--matrix", str(matrix), "render"]).returncode == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *base],
        cwd=REPO_ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 900
        while not leftover_containers(docker_client, owner_pid=process.pid):
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the build container never appeared"
            time.sleep(0.5)
        time.sleep(3)
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert leftover_containers(docker_client, owner_pid=process.pid) == []
    assert _objects(s3, s3_bucket) == before

    # 4. The next run completes, rebuilding only the affected cell.
    fourth = run_cli([*base, "--report", str(tmp_path / "r4.json")], env=env)
    assert fourth.returncode == 0, fourth.stderr[-3000:]
    assert _report(tmp_path / "r4.json") == {CELLS[0]: "skipped", CELLS[1]: "built"}
    changed = {k for k, v in _objects(s3, s3_bucket).items() if before.get(k) != v}
    assert "python-3.13.5-debian-12-amd64.tar.zst" not in changed
    # The build is reproducible: a new run image gives the same archive bytes, so the
    # archive, its sidecars and uv's metadata (same sha256, same build number) stay; the
    # manifest records the new fingerprint, so the next nightly skips the cell.
    assert changed == {"manifest.json"}
    after = json.loads(s3.get_object(Bucket=s3_bucket, Key="manifest.json")["Body"].read())
    entries = {r["name"]: r for r in after["runtimes"]}
    assert (
        entries["python-3.13.5-debian-13-amd64.tar.zst"]["fingerprint"]
        != {r["name"]: r for r in manifest["runtimes"]}["python-3.13.5-debian-13-amd64.tar.zst"][
            "fingerprint"
        ]
    )

    # 5. --force rebuilds although nothing changed.
    fifth = run_cli([*base, CELLS[0], "--force", "--report", str(tmp_path / "r5.json")], env=env)
    assert fifth.returncode == 0, fifth.stderr[-3000:]
    assert _report(tmp_path / "r5.json") == {CELLS[0]: "built"}
