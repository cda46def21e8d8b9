"""The S3 faults of test_publish_s3.py again, through `orchestrator nightly` (a child process,
as cron or CI runs it) against the real S3 server behind the fault proxy.

No compile: the cell's artifact is the session's end-to-end build, copied into a fresh OUT.
Its fingerprint is what nightly computes for the cell (same matrix, same profile), and nothing
is published yet, so nightly publishes that artifact without a rebuild (a run that built a
cell and then failed to publish leaves exactly this). Each case checks: the exit status and
one clear line on a fault; nothing half-published (manifest.json and uv's
download-metadata.json agree, and every object either names exists); the next run completes.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from docker import DockerClient

from orchestrator.publish.publisher import Publisher, load_artifact
from orchestrator.publish.s3store import S3Store
from tests.integration.support import E2E_CELL, CliRun, E2EBuild, container_creates, run_cli
from tests.publish_support import make_artifact
from tests.s3.fault_proxy import FAULT_KINDS, FaultKind, FaultProxy
from tests.s3.harness import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

PREFIX = "nightly/"
BASE_URL = "https://downloads.example.test"
ARCHIVE = "python-3.13.5-debian-12-amd64.tar.zst"
UV_KEY = f"{PREFIX}debian-12/amd64/download-metadata.json"


@pytest.fixture(autouse=True)
def _aws_credentials(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process S3Store reads boto3's standard chain, as in production: the env."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)


def _out_with_the_e2e_artifact(e2e_build: E2EBuild, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(e2e_build.out_dir / "artifacts", out / "artifacts")
    return out


def _nightly(
    out: Path, server: S3Server, bucket: str, proxy: FaultProxy, report: Path, *extra: str
) -> CliRun:
    return run_cli(
        ["--out", str(out), "nightly", E2E_CELL, "--profile", "fast", "--bucket", bucket,
         "--endpoint-url", proxy.url, "--prefix", PREFIX, "--public-base-url", BASE_URL,
         "--report", str(report), *extra],
        env=server.env(), timeout=900,
    )  # fmt: skip


def _objects(server: S3Server, bucket: str) -> dict[str, bytes]:
    """Every key in the bucket; the bodies of the JSON documents (b"" for the rest)."""
    client = server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {
        key: client.get_object(Bucket=bucket, Key=key)["Body"].read()
        if key.endswith(".json")
        else b""
        for key in keys
    }


def _assert_consistent(server: S3Server, bucket: str) -> dict[str, Any]:
    """Both manifests say the same thing, and every object they name exists.
    Returns manifest.json's runtimes by name ({} when there is no manifest yet)."""
    objects = _objects(server, bucket)
    keys = set(objects)

    def key_of(url: str) -> str:
        assert url.startswith(BASE_URL + "/"), url
        return unquote(url.removeprefix(BASE_URL + "/"))

    manifest = (
        json.loads(objects[f"{PREFIX}manifest.json"]) if f"{PREFIX}manifest.json" in keys else {}
    )
    runtimes = {r["name"]: r for r in manifest.get("runtimes", [])}
    uv_docs = {k: json.loads(v) for k, v in objects.items() if k.endswith("download-metadata.json")}
    uv_sha256 = {e["sha256"] for doc in uv_docs.values() for e in doc.values()}
    assert uv_sha256 == {r["sha256"] for r in runtimes.values()}, (uv_docs, runtimes)
    for runtime in runtimes.values():
        for field in ("url", "metadata_url", "sbom_url"):
            assert key_of(runtime[field]) in keys, runtime[field]
        assert f"{PREFIX}{runtime['name']}.sha256" in keys
    for doc in uv_docs.values():
        for entry in doc.values():
            assert key_of(entry["url"]) in keys, entry["url"]
    return runtimes


def _report(path: Path) -> dict[str, dict[str, Any]]:
    return {c["cell"]: c for c in json.loads(path.read_text())["cells"]}


def _one_error_line(run: CliRun) -> str:
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    return errors[0]


def _completes(out: Path, server: S3Server, bucket: str, proxy: FaultProxy, tmp_path: Path) -> None:
    """The next run, with the fault gone: exit 0, the cell published and consistent."""
    proxy.clear()
    again = _nightly(out, server, bucket, proxy, tmp_path / "again.json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert _report(tmp_path / "again.json")[E2E_CELL]["result"] == "built"
    assert ARCHIVE in _assert_consistent(server, bucket)
    check = run_cli(
        ["--out", str(out), "check-manifest", E2E_CELL, "--bucket", bucket,
         "--endpoint-url", server.endpoint_url, "--prefix", PREFIX],
        env=server.env(), timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_transient_faults_are_retried_through_nightly(
    kind: FaultKind,
    e2e_build: E2EBuild,
    s3_server: S3Server,
    s3_bucket: str,
    fault_proxy: FaultProxy,
    tmp_path: Path,
    docker_client: DockerClient,
) -> None:
    out = _out_with_the_e2e_artifact(e2e_build, tmp_path)
    fault_proxy.fail_next(3, kind, method="PUT")
    started = time.time()
    run = _nightly(out, s3_server, s3_bucket, fault_proxy, tmp_path / "r.json")
    assert run.returncode == 0, run.stderr[-3000:]
    assert fault_proxy.injected == 3
    assert run.stderr.count("retry: ") >= 3, run.stderr[-3000:]
    outcome = _report(tmp_path / "r.json")[E2E_CELL]
    assert outcome["result"] == "built" and "published now" in outcome["reason"], outcome
    # Published from the session's build: no container was started for it.
    assert container_creates(docker_client, started, time.time(), run.pid) == []
    runtimes = _assert_consistent(s3_server, s3_bucket)
    assert runtimes[ARCHIVE]["sha256"] == load_artifact(out / "artifacts", ARCHIVE).sha256


def test_a_permanent_fault_on_a_sidecar_publishes_nothing_then_the_next_run_completes(
    e2e_build: E2EBuild, s3_server: S3Server, s3_bucket: str, fault_proxy: FaultProxy,
    tmp_path: Path,
) -> None:  # fmt: skip
    out = _out_with_the_e2e_artifact(e2e_build, tmp_path)
    # Every write of the cell's .json fails: archive, .sha256 and SBOM land, no manifest.
    fault_proxy.fail_always("503", method="PUT", path_contains="debian-12-amd64.json")
    run = _nightly(out, s3_server, s3_bucket, fault_proxy, tmp_path / "r.json")
    assert run.returncode == 11, run.stderr[-3000:]
    assert E2E_CELL in _one_error_line(run)
    failed = [line for line in run.stderr.splitlines() if f"[{E2E_CELL}] failed" in line]
    assert len(failed) == 1 and "ServiceUnavailable" in failed[0], run.stderr[-3000:]
    assert "gave up after 6 attempts" in failed[0]
    assert _report(tmp_path / "r.json")[E2E_CELL]["result"] == "failed"
    assert _assert_consistent(s3_server, s3_bucket) == {}
    assert UV_KEY not in _objects(s3_server, s3_bucket)
    # What the next run will do: publish the artifact this one built, not compile again.
    fault_proxy.clear()
    plan = _nightly(out, s3_server, s3_bucket, fault_proxy, tmp_path / "dry.json", "--dry-run")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert plan.stdout.split()[:2] == ["publish", E2E_CELL], plan.stdout
    _completes(out, s3_server, s3_bucket, fault_proxy, tmp_path)


def test_a_permanent_fault_on_the_manifest_puts_uv_metadata_back(
    e2e_build: E2EBuild, s3_server: S3Server, s3_bucket: str, fault_proxy: FaultProxy,
    tmp_path: Path,
) -> None:  # fmt: skip
    # Another runtime of the same stack and arch is already published, so both manifests exist.
    store = S3Store(bucket=s3_bucket, region=s3_server.region, endpoint_url=s3_server.endpoint_url,
                    public_base_url=BASE_URL)  # fmt: skip
    other = make_artifact(tmp_path / "other", version="3.13.4")
    Publisher(store, prefix=PREFIX, progress=lambda _line: None).publish(
        load_artifact(tmp_path / "other", other)
    )
    before = _objects(s3_server, s3_bucket)
    out = _out_with_the_e2e_artifact(e2e_build, tmp_path)
    # uv's file is written, then manifest.json fails: uv's must be put back.
    fault_proxy.fail_always("500", method="PUT", path_contains=f"{PREFIX}manifest.json")
    run = _nightly(out, s3_server, s3_bucket, fault_proxy, tmp_path / "r.json")
    assert run.returncode == 11, run.stderr[-3000:]
    assert E2E_CELL in _one_error_line(run)
    failed = [line for line in run.stderr.splitlines() if f"[{E2E_CELL}] failed" in line]
    assert len(failed) == 1 and "InternalError" in failed[0], run.stderr[-3000:]
    assert f"put back s3://{s3_bucket}/{UV_KEY} as it was" in run.stderr, run.stderr[-3000:]
    after = _objects(s3_server, s3_bucket)
    assert after[UV_KEY] == before[UV_KEY]
    assert after[f"{PREFIX}manifest.json"] == before[f"{PREFIX}manifest.json"]
    assert set(_assert_consistent(s3_server, s3_bucket)) == {other}
    _completes(out, s3_server, s3_bucket, fault_proxy, tmp_path)
    assert set(_assert_consistent(s3_server, s3_bucket)) == {other, ARCHIVE}


def test_an_unreadable_manifest_stops_the_run_in_one_line_then_the_next_run_completes(
    e2e_build: E2EBuild, s3_server: S3Server, s3_bucket: str, fault_proxy: FaultProxy,
    tmp_path: Path,
) -> None:  # fmt: skip
    out = _out_with_the_e2e_artifact(e2e_build, tmp_path)
    # The skip decision reads manifest.json first; the server keeps failing that read.
    fault_proxy.fail_always("503", method="GET", path_contains=f"{PREFIX}manifest.json")
    run = _nightly(out, s3_server, s3_bucket, fault_proxy, tmp_path / "r.json")
    assert run.returncode == 10, run.stderr[-3000:]
    line = _one_error_line(run)
    assert "manifest.json" in line and "ServiceUnavailable" in line, line
    assert _objects(s3_server, s3_bucket) == {}
    _completes(out, s3_server, s3_bucket, fault_proxy, tmp_path)
