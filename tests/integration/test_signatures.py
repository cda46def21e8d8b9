"""Upstream's real signature on a real release: Python-3.13.5.tar.xz and its .asc from Debian's
pool, checked against Thomas Wouters' key pinned by fingerprint in keys/ (a key that expired
in July 2026, a year after it signed). Tampered tarballs and foreign keys are refused before
any container starts."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from docker import DockerClient

from tests.gpg_support import make_key
from tests.integration.support import (
    E2E_CELL,
    REPO_ROOT,
    CliRun,
    E2EBuild,
    container_creates,
    run_cli,
)

pytestmark = pytest.mark.integration

THOMAS = "7169605F62C751356D054A26A821E680E5FA6305"
PIN = "93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640"


@pytest.fixture(scope="module")
def real_release() -> tuple[Path, Path]:
    """The real tarball and upstream's .asc, through the farm's own fetch (Debian's pool)."""
    fetched = run_cli(["fetch", "3.13.5"], cwd=REPO_ROOT)
    assert fetched.returncode == 0, fetched.stderr
    cache = REPO_ROOT / ".cache" / "sources"
    return cache / "Python-3.13.5.tar.xz", cache / "Python-3.13.5.tar.xz.asc"


def test_fetch_verifies_the_real_signature(real_release: tuple[Path, Path]) -> None:
    result = run_cli(["fetch", "3.13.5"], cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert (
        f"OpenPGP: Thomas Wouters <thomas@python.org> {THOMAS} signed 2025-06-11" in result.stdout
    )
    assert "key expired 2026-07-02 after signing" in result.stdout


def _long_tmpdir(base: Path, length: int = 200) -> Path:
    """A directory whose path is exactly `length` characters: deeper than an agent socket
    path may be (about 107 bytes), as on CI runners with deep temp dirs."""
    stem = base / "t"
    path = Path(str(stem) + "x" * (length - len(str(stem))))
    path.mkdir(parents=True)
    assert len(str(path)) == length
    return path


def test_the_real_signature_verifies_with_a_200_character_tmpdir(
    real_release: tuple[Path, Path], project_copy: Path, tmp_path: Path
) -> None:
    # Finding 2 of issue 16: the keyring's GnuPG home lives under TMPDIR; gpg --import asked
    # gpg-agent, whose socket path was too long, and the pinned key was reported as "not an
    # OpenPGP public key". The key is now never imported, so no agent is involved.
    tarball, asc = real_release
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    os.link(tarball, mirror / tarball.name)
    shutil.copy(asc, mirror / asc.name)
    matrix = _project_with_mirror(project_copy, mirror, tmp_path / "cache", PIN)
    tmpdir = _long_tmpdir(tmp_path)
    result = run_cli(["--matrix", str(matrix), "fetch", "3.13.5"], env={"TMPDIR": str(tmpdir)})
    assert result.returncode == 0, result.stderr
    assert f"OpenPGP signature good: Thomas Wouters <thomas@python.org> {THOMAS}" in (result.stderr)
    assert "signed 2025-06-11" in result.stdout
    assert list(tmpdir.iterdir()) == []  # the keyring's temp home was removed


def _project_with_mirror(project: Path, mirror: Path, cache: Path, pin: str) -> Path:
    matrix = project / "matrix.yaml"
    text = matrix.read_text().replace(PIN, pin)
    text = re.sub(
        r"  mirrors:\n(    - .*\n)+", f"  mirrors:\n    - file://{mirror}/{{filename}}\n", text
    )
    text = text.replace("cache_dir: .cache/sources", f"cache_dir: {cache}")
    matrix.write_text(text)
    return matrix


def _build(matrix: Path, out: Path) -> tuple[CliRun, float, float]:
    started = time.time()
    result = run_cli(
        ["--matrix", str(matrix), "--out", str(out), "build", E2E_CELL, "--profile", "fast"]
    )
    return result, started, time.time()


def test_one_changed_byte_is_refused_before_any_container(
    real_release: tuple[Path, Path], project_copy: Path, docker_client: DockerClient, tmp_path: Path
) -> None:
    tarball, asc = real_release
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0x01
    (mirror / tarball.name).write_bytes(bytes(data))
    shutil.copy(asc, mirror / asc.name)
    # Even with a pin that matches the altered file (a compromised pin or feed), the
    # signature stops it.
    matrix = _project_with_mirror(
        project_copy, mirror, tmp_path / "cache", hashlib.sha256(bytes(data)).hexdigest()
    )
    result, started, finished = _build(matrix, tmp_path / "out")
    assert result.returncode == 4, result.stderr
    stderr = result.stderr
    assert "BAD OpenPGP signature" in stderr and "Traceback" not in stderr
    assert container_creates(docker_client, started, finished, result.pid) == []
    assert not (tmp_path / "cache" / tarball.name).exists()
    assert not (tmp_path / "out" / "artifacts").exists()


def test_the_right_tarball_signed_by_another_key_is_refused(
    real_release: tuple[Path, Path], project_copy: Path, docker_client: DockerClient, tmp_path: Path
) -> None:
    tarball, _ = real_release
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    os.link(tarball, mirror / tarball.name)
    impostor = make_key(tmp_path / "impostor", name="Thomas Wouters <thomas@python.org>")
    impostor.sign_detached(mirror / tarball.name, mirror / f"{tarball.name}.asc")
    matrix = _project_with_mirror(project_copy, mirror, tmp_path / "cache", PIN)
    result, started, finished = _build(matrix, tmp_path / "out")
    assert result.returncode == 4, result.stderr
    stderr = result.stderr
    assert f"signed by key {impostor.fingerprint}, which is not pinned" in stderr
    assert "Traceback" not in stderr
    assert container_creates(docker_client, started, finished, result.pid) == []


def test_archive_metadata_records_the_proof(e2e_build: E2EBuild) -> None:
    record = json.loads(e2e_build.metadata.read_text())
    verification = record["source"]["verification"]
    assert verification["methods"] == ["sha256", "openpgp"]
    assert verification["openpgp"]["fingerprint"] == THOMAS
    assert verification["openpgp"]["signed_at"] == "2025-06-11T17:45:54Z"
