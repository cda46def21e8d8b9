"""Publishing to a real S3 server (moto over HTTP): immutability, concurrency, faults, and
a real client (uv) installing the runtime the end-to-end test built."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from orchestrator.errors import PublishError
from orchestrator.publish.publisher import Publisher, load_artifact
from orchestrator.publish.s3store import S3Store
from tests.integration.support import REPO_ROOT, E2EBuild, run_cli
from tests.publish_support import make_artifact
from tests.s3.fault_proxy import FaultProxy
from tests.s3.harness import S3Server

pytestmark = pytest.mark.integration

MB = 1024 * 1024


@pytest.fixture(autouse=True)
def _aws_credentials(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3Store takes credentials from boto3's standard chain, as in production: the env."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)


def _store(server: S3Server, bucket: str, endpoint: str | None = None, **kwargs: Any) -> S3Store:
    endpoint_url = endpoint or server.endpoint_url
    return S3Store(bucket=bucket, region=server.region, endpoint_url=endpoint_url, **kwargs)


def _publisher(store: S3Store) -> Publisher:
    return Publisher(store, prefix="runtimes", progress=lambda _line: None)


def _manifest(server: S3Server, bucket: str) -> dict[str, Any] | None:
    client = server.client()
    try:
        body = client.get_object(Bucket=bucket, Key="runtimes/manifest.json")["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return json.loads(body)  # type: ignore[no-any-return]


def _keys(server: S3Server, bucket: str) -> set[str]:
    listing = server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"] for o in listing}


def test_publish_then_no_overwrite_then_force(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    # Over the multipart threshold, so the hand-driven conditional multipart path runs.
    name = make_artifact(tmp_path / "one", size_bytes=12 * MB)
    store = _store(s3_server, s3_bucket, transfer=TransferConfig(multipart_threshold=8 * MB))
    first = _publisher(store).publish(load_artifact(tmp_path / "one", name))
    assert first.action == "uploaded"
    head = s3_server.client().head_object(
        Bucket=s3_bucket, Key=f"runtimes/{name}", ChecksumMode="ENABLED"
    )
    assert head["ContentLength"] == 12 * MB
    assert head["ContentType"] == "application/zstd"
    assert head["Metadata"]["sha256"] == load_artifact(tmp_path / "one", name).sha256
    assert head.get("ChecksumSHA256"), "S3 kept no SHA-256 checksum"

    manifest_before = _manifest(s3_server, s3_bucket)
    again = _publisher(store).publish(load_artifact(tmp_path / "one", name))
    assert again.action == "unchanged"
    assert _manifest(s3_server, s3_bucket) == manifest_before

    make_artifact(tmp_path / "two", size_bytes=12 * MB, content=b"another build ")
    with pytest.raises(PublishError, match="use --force"):
        _publisher(store).publish(load_artifact(tmp_path / "two", name))
    replaced = _publisher(store).publish(load_artifact(tmp_path / "two", name), force=True)
    assert replaced.action == "replaced"
    record = json.loads(
        s3_server.client()
        .get_object(Bucket=s3_bucket, Key=f"runtimes/{name.replace('.tar.zst', '.json')}")["Body"]
        .read()
    )
    assert record["published"]["replaced"]["sha256"] == load_artifact(tmp_path / "one", name).sha256
    manifest = _manifest(s3_server, s3_bucket)
    assert manifest is not None
    assert manifest["runtimes"][0]["sha256"] == load_artifact(tmp_path / "two", name).sha256


def test_create_only_holds_when_publishers_race(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """Two different archives for one key at once: exactly one wins, the other is refused."""
    name = make_artifact(tmp_path / "a", content=b"build a ")
    make_artifact(tmp_path / "b", content=b"build b ")
    results: list[str] = []

    def run(directory: str) -> None:
        try:
            _publisher(_store(s3_server, s3_bucket)).publish(
                load_artifact(tmp_path / directory, name)
            )
            results.append("ok")
        except PublishError as exc:
            results.append("refused" if "--force" in str(exc) else f"error: {exc}")

    threads = [threading.Thread(target=run, args=(d,)) for d in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["ok", "refused"]


def test_eight_concurrent_publishers_keep_every_manifest_entry(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    cells = [(v, s, a) for v in ("3.12.11", "3.13.5") for s in ("debian-12", "ubuntu-24.04")
             for a in ("amd64", "arm64")]  # fmt: skip
    names = [make_artifact(tmp_path, version=v, stack=s, arch=a) for v, s, a in cells]
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:  # each publisher its own client, like separate machines
            _publisher(_store(s3_server, s3_bucket)).publish(load_artifact(tmp_path, name))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    manifest = _manifest(s3_server, s3_bucket)
    assert manifest is not None
    assert sorted(r["name"] for r in manifest["runtimes"]) == sorted(names)
    client = s3_server.client()
    uv = json.loads(
        client.get_object(
            Bucket=s3_bucket, Key="runtimes/ubuntu-24.04/arm64/download-metadata.json"
        )["Body"].read()
    )
    assert sorted(uv) == ["cpython-3.12.11-linux-aarch64-gnu", "cpython-3.13.5-linux-aarch64-gnu"]


@pytest.mark.parametrize("kind", ["503", "slowdown", "reset", "500"])
def test_transient_faults_are_retried(
    kind: str, s3_server: S3Server, s3_bucket: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    name = make_artifact(tmp_path, size_bytes=10 * MB)
    fault_proxy.fail_next(3, kind)
    retries: list[str] = []
    store = _store(s3_server, s3_bucket, endpoint=fault_proxy.url, on_retry=retries.append,
                   transfer=TransferConfig(multipart_threshold=8 * MB))  # fmt: skip
    outcome = _publisher(store).publish(load_artifact(tmp_path, name))
    assert outcome.action == "uploaded"
    assert fault_proxy.injected == 3
    assert len(retries) == 3
    assert _manifest(s3_server, s3_bucket) is not None


def test_permanent_fault_leaves_manifests_unchanged(
    s3_server: S3Server, s3_bucket: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    first = make_artifact(tmp_path, stack="debian-12")
    second = make_artifact(tmp_path, stack="debian-13")
    _publisher(_store(s3_server, s3_bucket)).publish(load_artifact(tmp_path, first))
    before = _manifest(s3_server, s3_bucket)
    # Every write of the second cell's .json fails: archive and .sha256 land, nothing else.
    fault_proxy.fail_always("503", method="PUT", path_contains="debian-13-amd64.json")
    store = _store(s3_server, s3_bucket, endpoint=fault_proxy.url, max_wait=0.2)
    with pytest.raises(PublishError, match=r"ServiceUnavailable.*gave up after 6 attempts"):
        _publisher(store).publish(load_artifact(tmp_path, second))
    assert _manifest(s3_server, s3_bucket) == before
    keys = _keys(s3_server, s3_bucket)
    assert not any("debian-13" in key for key in keys if key.endswith("download-metadata.json"))
    # Every manifest entry references an object that exists.
    assert before is not None
    for entry in before["runtimes"]:
        assert f"runtimes/{entry['name']}" in keys
    # Once the fault clears, publishing again completes (the archive is already there).
    fault_proxy.clear()
    again = _publisher(_store(s3_server, s3_bucket)).publish(load_artifact(tmp_path, second))
    assert again.action == "unchanged"
    manifest = _manifest(s3_server, s3_bucket)
    assert manifest is not None and len(manifest["runtimes"]) == 2


def test_cli_errors_are_one_line(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_artifact(out / "artifacts")
    env = s3_server.env()
    missing = run_cli(
        ["--out", str(out), "publish", "--bucket", "no-such-bucket-here",
         "--endpoint-url", s3_server.endpoint_url], env=env,
    )  # fmt: skip
    assert missing.returncode == 10
    assert missing.stderr.count("\n") >= 1
    last = missing.stderr.strip().splitlines()[-1]
    assert (
        "no-such-bucket-here" in last
        and "NoSuchBucket" in last
        and "Traceback" not in missing.stderr
    )
    dry = run_cli(
        ["--out", str(out), "publish", "--dry-run", "--bucket", s3_bucket,
         "--endpoint-url", s3_server.endpoint_url], env=env,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert dry.stderr.count("would write") == 6  # archive, .sha256, SBOM, .json, 2 manifests
    assert _keys(s3_server, s3_bucket) == set()


@pytest.mark.e2e
def test_uv_installs_the_published_runtime(
    e2e_build: E2EBuild, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """The real consumer: uv reads our download-metadata.json and installs our archive."""
    out = tmp_path / "out"
    shutil.copytree(e2e_build.out_dir / "artifacts", out / "artifacts")
    s3_server.allow_anonymous_reads(s3_bucket)  # a public bucket, as platforms serve them
    env = s3_server.env()
    published = run_cli(
        ["--out", str(out), "publish", "3.13.5-debian-12-amd64", "--bucket", s3_bucket,
         "--endpoint-url", s3_server.endpoint_url], env=env,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    checked = run_cli(
        ["--out", str(out), "check-manifest", "3.13.5-debian-12-amd64", "--bucket", s3_bucket,
         "--endpoint-url", s3_server.endpoint_url], env=env,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr

    uv = shutil.which("uv", path=str(Path(os.__file__).parents[3] / "bin")) or shutil.which("uv")
    if uv is None:
        uv = str(REPO_ROOT / ".venv" / "bin" / "uv")
    uv_env = {
        **os.environ,
        **env,
        "UV_PYTHON_DOWNLOADS_JSON_URL": s3_server.object_url(
            s3_bucket, "debian-12/amd64/download-metadata.json"
        ),
        "UV_PYTHON_INSTALL_DIR": str(tmp_path / "pythons"),
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        "UV_PYTHON_PREFERENCE": "only-managed",
        "UV_NO_CONFIG": "1",
    }
    install = subprocess.run([uv, "python", "install", "3.13.5"], env=uv_env,
                             capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert install.returncode == 0, install.stderr
    run = subprocess.run(
        [uv, "run", "--no-project", "--python", "3.13.5", "python", "-c",
         "import ssl, sqlite3, sys, sysconfig; print(sys.prefix); print(ssl.OPENSSL_VERSION); "
         "v = sysconfig.get_config_var; print(v('prefix'), v('LIBDIR'), v('INCLUDEPY'))"],
        env=uv_env, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    prefix = run.stdout.splitlines()[0]
    assert prefix.startswith(str(tmp_path / "pythons")), run.stdout
    # uv rewrote _sysconfigdata_ from its literal dict (docs/RELOCATION.md): the placeholder
    # became uv's install directory, so build tools see real paths there too.
    assert run.stdout.splitlines()[2].split() == [
        prefix,
        f"{prefix}/lib",
        f"{prefix}/include/python3.13",
    ], run.stdout
