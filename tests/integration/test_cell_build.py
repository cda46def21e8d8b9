"""The foundation, on the real engine: one cell built end to end, and its failure modes."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import zstandard
from docker import DockerClient

from orchestrator.archive import pack_tree
from orchestrator.cellbuild import leftover_containers
from tests.integration.support import E2E_CELL, REPO_ROOT, E2EBuild, container_creates, run_cli

pytestmark = pytest.mark.integration

IMPORTS = (
    "ssl, sqlite3, ctypes, lzma, bz2, zlib, readline, curses, dbm.gnu, _uuid, decimal, "
    "xml.parsers.expat"
)


def _members(archive: Path) -> list[tarfile.TarInfo]:
    with archive.open("rb") as raw:
        reader = zstandard.ZstdDecompressor().stream_reader(raw)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            return list(tar)


@pytest.mark.e2e
def test_archive_and_checksum_agree(e2e_build: E2EBuild) -> None:
    digest = hashlib.sha256(e2e_build.archive.read_bytes()).hexdigest()
    assert e2e_build.sha256_file.read_text() == f"{digest}  {e2e_build.archive.name}\n"
    check = subprocess.run(
        ["sha256sum", "-c", e2e_build.sha256_file.name],
        cwd=e2e_build.archive.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.e2e
def test_metadata_record(e2e_build: E2EBuild) -> None:
    import json

    record = json.loads(e2e_build.metadata.read_text())
    assert record["version"] == "3.13.5"
    assert (record["stack"], record["distro"], record["distro_version"], record["arch"]) == (
        "debian-12",
        "debian",
        "12",
        "amd64",
    )
    assert record["profile"] == "fast"
    assert record["sha256"] == hashlib.sha256(e2e_build.archive.read_bytes()).hexdigest()
    assert record["size"] == e2e_build.archive.stat().st_size
    assert record["source"]["sha256"] == (
        "93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640"
    )
    assert record["builder_image_id"].startswith("sha256:")
    assert "--enable-shared" in record["configure_args"]
    assert record["build_seconds"] > 0
    assert re.fullmatch(r"[0-9a-f]{64}", record["fingerprint"])


@pytest.mark.e2e
def test_archive_layout_is_flat_and_trimmed(e2e_build: E2EBuild) -> None:
    names = [m.name for m in _members(e2e_build.archive)]
    assert "./bin/python3" in names and "./lib/libpython3.13.so.1.0" in names
    assert all(n.startswith("./") for n in names)
    assert not [n for n in names if n.endswith(".a")]
    assert not [n for n in names if re.search(r"/(test|tests|idle_test)(/|$)", n)]
    assert not [n for n in names if re.search(r"\.opt-[12]\.pyc$", n)]
    assert not [n for n in names if re.search(r"/bin/(idle|pydoc|2to3)", n)]
    python = next(m for m in _members(e2e_build.archive) if m.name == "./bin/python")
    assert python.issym() and python.linkname == "python3"


@pytest.mark.e2e
def test_runtime_works_at_a_random_path_without_ld_library_path(
    e2e_build: E2EBuild, docker_client: DockerClient, run_image_debian12: str
) -> None:
    target = f"/srv/runtime-{secrets.token_hex(4)}"
    script = (
        f"set -e; unset LD_LIBRARY_PATH; mkdir -p {target}; "
        f"tar --zstd -xf /archive.tar.zst -C {target}; "
        f"{target}/bin/python3 -c 'import {IMPORTS}; import sys; print(sys.prefix)'; "
        f"{target}/bin/python -c 'import sqlite3, ssl; print(ssl.OPENSSL_VERSION)'"
    )
    output = docker_client.containers.run(
        run_image_debian12,
        ["bash", "-c", script],
        volumes={str(e2e_build.archive): {"bind": "/archive.tar.zst", "mode": "ro"}},
        environment={},
        network_disabled=True,
        remove=True,
    ).decode()
    lines = output.strip().splitlines()
    assert lines[0] == target
    assert lines[1].startswith("OpenSSL")


@pytest.mark.e2e
def test_packing_the_same_tree_twice_is_byte_identical(e2e_build: E2EBuild, tmp_path: Path) -> None:
    import json

    from orchestrator.build import source_date_epoch

    epoch = source_date_epoch(REPO_ROOT / ".cache" / "sources" / "Python-3.13.5.tar.xz")
    first = pack_tree(e2e_build.tree, tmp_path / "a.tar.zst", source_date_epoch=epoch)
    second = pack_tree(e2e_build.tree, tmp_path / "b.tar.zst", source_date_epoch=epoch)
    assert (tmp_path / "a.tar.zst").read_bytes() == (tmp_path / "b.tar.zst").read_bytes()
    # The published archive is that same function of the tree: packing is reproducible.
    assert first.sha256 == second.sha256 == json.loads(e2e_build.metadata.read_text())["sha256"]


def test_wrong_sha256_stops_before_any_container(
    project_copy: Path, docker_client: DockerClient, tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    real = REPO_ROOT / ".cache" / "sources" / "Python-3.13.5.tar.xz"
    if not real.is_file():
        fetched = run_cli(["fetch", "3.13.5"])
        assert fetched.returncode == 0, fetched.stderr
    os.link(real, mirror / "Python-3.13.5.tar.xz")
    matrix = project_copy / "matrix.yaml"
    text = matrix.read_text()
    text = text.replace(
        "93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640", "f" * 64
    )
    text = re.sub(
        r"  mirrors:\n(    - .*\n)+", f"  mirrors:\n    - file://{mirror}/{{filename}}\n", text
    )
    text = text.replace("cache_dir: .cache/sources", f"cache_dir: {tmp_path / 'cache'}")
    matrix.write_text(text)

    started = time.time()
    result = run_cli(
        [
            "--matrix",
            str(matrix),
            "--out",
            str(tmp_path / "out"),
            "build",
            E2E_CELL,
            "--profile",
            "fast",
        ]
    )
    finished = time.time()
    assert result.returncode == 4, result.stderr
    assert "sha256 mismatch" in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert container_creates(docker_client, started, finished, result.pid) == []
    assert not list((tmp_path / "cache").glob("*")), "a bad tarball was cached"
    assert not (tmp_path / "out" / "artifacts").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_leaves_no_container(
    sig: signal.Signals, docker_client: DockerClient, tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "--out",
            str(tmp_path),
            "build",
            E2E_CELL,
            "--profile",
            "fast",
            "--quiet",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a terminal job
        # A terminal job gets Ctrl-C; a job started in the background by a non-interactive
        # shell (how CI may launch this suite) inherits SIGINT ignored, and exec keeps that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 600
        while not leftover_containers(docker_client, E2E_CELL, owner_pid=process.pid):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the build container never appeared"
            time.sleep(0.5)
        time.sleep(3)  # let the compile get going
        os.killpg(process.pid, sig)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    assert leftover_containers(docker_client, E2E_CELL, owner_pid=process.pid) == []
    artifacts = tmp_path / "artifacts"
    assert not artifacts.exists() or not any(artifacts.iterdir())
