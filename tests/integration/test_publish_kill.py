"""SIGKILL of the orchestrator mid-publish: no clean-up code runs, yet nothing published may
reference an object that does not exist, and the next run completes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import E2E_CELL, REPO_ROOT, E2EBuild, run_cli
from tests.s3.harness import S3Server

pytestmark = pytest.mark.integration

# Seconds after the CLI says where it publishes: from "before the first byte" to "manifests".
KILL_AFTER = (0.0, 0.2, 0.5, 1.0, 1.5, 2.5, 4.0)


def _dangling(s3: Any, bucket: str) -> list[str]:
    """Keys the manifests point at that are missing, or whose bytes differ from the entry."""
    keys = {o["Key"]: o for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    problems: list[str] = []
    if "manifest.json" in keys:
        manifest = json.loads(s3.get_object(Bucket=bucket, Key="manifest.json")["Body"].read())
        for entry in manifest["runtimes"]:
            for url in (entry["url"], entry.get("metadata_url"), entry.get("sbom_url")):
                if url and url.rsplit("/", 1)[-1] not in keys:
                    problems.append(f"manifest -> {url}")
    for key in [k for k in keys if k.endswith("download-metadata.json")]:
        for name, entry in json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).items():
            if entry["url"].rsplit("/", 1)[-1] not in keys:
                problems.append(f"{key}[{name}] -> {entry['url']}")
    return problems


def test_sigkill_mid_publish_leaves_nothing_dangling(
    e2e_build: E2EBuild, s3_server: S3Server, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(e2e_build.out_dir / "artifacts", out / "artifacts")
    s3 = s3_server.client()
    killed_mid_way = 0
    for delay in KILL_AFTER:
        bucket = f"farm-kill-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        args = ["--out", str(out), "publish", E2E_CELL, "--bucket", bucket,
                "--endpoint-url", s3_server.endpoint_url]  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *args], cwd=REPO_ROOT,
            env={**os.environ, **s3_server.env()}, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stderr is not None
        for line in process.stderr:
            if "publishing to" in line:
                break
        time.sleep(delay)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            killed_mid_way += 1
        process.wait()
        process.stderr.close()
        assert _dangling(s3, bucket) == [], f"after SIGKILL at +{delay} s"

        # The next run completes, and (told that anything is stale) clears unfinished uploads.
        again = run_cli([*args, "--sweep-after", "0"], env=s3_server.env())
        assert again.returncode == 0, again.stderr[-2000:]
        assert _dangling(s3, bucket) == []
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        checked = run_cli(
            ["--out", str(out), "check-manifest", E2E_CELL, "--bucket", bucket,
             "--endpoint-url", s3_server.endpoint_url], env=s3_server.env(),
        )  # fmt: skip
        assert checked.returncode == 0, checked.stderr[-2000:]
    # The sweep must have caught publishing in the act at least once, or it proved nothing.
    assert killed_mid_way >= 2


def test_killed_local_publish_leaves_temp_files_the_next_run_sweeps(
    e2e_build: E2EBuild, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(e2e_build.out_dir / "artifacts", out / "artifacts")
    store = out / "publish"  # the default local store
    # What a publisher killed inside write_atomic leaves: a temp file beside the final name.
    store.mkdir()
    orphan = store / ".python-3.13.5-debian-12-amd64.tar.zst.tmp-k1ll3d00"
    orphan.write_bytes(b"\0" * 1024)
    fresh = store / ".manifest.json.tmp-l1v3wr1t"
    fresh.write_bytes(b"{}")
    old = time.time() - 7 * 3600
    os.utime(orphan, (old, old))
    result = run_cli(["--out", str(out), "publish", E2E_CELL])
    assert result.returncode == 0, result.stderr[-2000:]
    assert not orphan.exists(), "a 7 hour old temp file outlived the default 6 hours"
    assert fresh.exists(), "a fresh temp file may be a live writer's"
