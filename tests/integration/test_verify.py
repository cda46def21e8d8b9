"""Verification on the real engine: the e2e runtime passes; deliberately broken ones fail,
each naming its problem."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from docker import DockerClient

from orchestrator.archive import pack_tree
from orchestrator.errors import VerificationError
from orchestrator.verify.runtime import (
    VerificationReport,
    leftover_verify_containers,
    raise_for_failures,
    verify_archive,
)
from tests.integration.support import E2EBuild

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@pytest.fixture(scope="module")
def metadata(e2e_build: E2EBuild) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(e2e_build.metadata.read_text())
    return record


def _verify(
    client: DockerClient,
    archive: Path,
    metadata: dict[str, Any],
    *,
    run_image: str,
    builder_image: str,
    log_path: Path,
    consumer_image: str | None = None,
) -> VerificationReport:
    report = verify_archive(
        client,
        archive=archive,
        metadata=metadata,
        run_image=run_image,
        builder_image=builder_image,
        consumer_image=consumer_image,
        expected_modules=metadata["expected_modules"],
        log_path=log_path,
    )
    assert not leftover_verify_containers(client, owner_pid=os.getpid())
    return report


def _broken(
    e2e_build: E2EBuild, metadata: dict[str, Any], tmp_path: Path, damage: Callable[[Path], None]
) -> tuple[Path, dict[str, Any]]:
    """A copy of the e2e install tree, damaged, repacked, with a metadata record to match."""
    tree = tmp_path / "tree"
    shutil.copytree(e2e_build.tree, tree, symlinks=True)
    damage(tree)
    # Any zstd level unpacks the same; 3 keeps the test fast.
    info = pack_tree(tree, tmp_path / e2e_build.archive.name, source_date_epoch=0, level=3)
    return info.path, {**metadata, "sha256": info.sha256, "size": info.size}


def _failure_message(report: VerificationReport) -> str:
    with pytest.raises(VerificationError) as caught:
        raise_for_failures(report, what="broken runtime")
    assert caught.value.exit_code == 9
    return str(caught.value)


def test_the_e2e_runtime_passes(
    e2e_build: E2EBuild,
    metadata: dict[str, Any],
    docker_client: DockerClient,
    run_image_debian12: str,
    builder_image_debian12: str,
    consumer_image_debian12: str,
    tmp_path: Path,
) -> None:
    report = _verify(
        docker_client,
        e2e_build.archive,
        metadata,
        run_image=run_image_debian12,
        builder_image=builder_image_debian12,
        consumer_image=consumer_image_debian12,
        log_path=tmp_path / "verify.log",
    )
    raise_for_failures(report, what=e2e_build.archive.name)  # names any failure on its own
    assert report.ok
    names = {check.name for check in report.checks}
    expected = {
        "archive:sha256",
        "elf:rpath",
        "elf:stripped",
        "exec:python3.13",
        "config:prefix",
        "config:python-config-py",
        "sys:prefix",
        "bin:entries",
        "ldd",
        "roundtrip:sqlite3",
        "recursion:thread",
        "venv:pip",
        "sysconfig:flags",
        "cext:import",
        "embed:run",
        "elf:nx-stack",
        "elf:wx-load",
        "elf:relro",
        "elf:bind-now",
        "elf:textrel",
        "elf:stack-protector",
        "elf:fortify",
        # Relocation (docs/RELOCATION.md), at the random path verification unpacks to.
        "relocate:build-dir",
        "relocate:build-prefix",
        "sysconfig:relocated",
        "sysconfig:uv-format",
        "embed:pythonhome",
        "embed:inside-tree",
        "embed:outside-no-home",
        "pkgconfig:flags",
        "pkgconfig:embed-run",
        "cmake:found",
        "cmake:import",
        "cmake:embed-run",
        "meson:pkgconfig-import",
    } | {f"import:{module}" for module in metadata["expected_modules"]}
    assert expected <= names, expected - names
    # Passed, not skipped: the fast profile ships pip's wheel, so venv:pip is required, and
    # every required check was reported and passed (a skip of one would fail report.ok).
    assert "venv:pip" in report.required and set(report.required) <= names
    assert all(c.ok for c in report.checks if c.name in report.required)
    assert metadata["verification"]["required"] == list(report.required)
    assert [s for s in metadata["verification"]["skipped"] if s["required"]] == []
    # The build recorded the same hardening: every linked ELF file hardened, and libpython
    # compiled with the stack protector and _FORTIFY_SOURCE (matrix.yaml build_flags).
    hardening = metadata["verification"]["hardening"]
    assert hardening == report.hardening
    every = hardening["elf_files"]
    assert every > 50
    assert [hardening[k] for k in ("nx_stack", "relro", "bind_now", "no_textrel")] == [every] * 4
    assert hardening["interpreter"] == "lib/libpython3.13.so.1.0"
    assert "__memcpy_chk" in hardening["interpreter_fortified"]
    assert {"libc6", "libssl3", "libsqlite3-0", "zlib1g", "libffi8"} <= set(
        report.runtime_packages
    ), report.runtime_packages
    assert all(":" not in package for package in report.runtime_packages)
    assert "libpython3.13.so.1.0" in report.needed["bin/python3.13"]
    assert report.log_path is not None and "CHECK ldd ok" in report.log_path.read_text()


def test_a_skipped_required_check_fails_the_real_verification(
    e2e_build: E2EBuild,
    metadata: dict[str, Any],
    docker_client: DockerClient,
    run_image_debian12: str,
    builder_image_debian12: str,
    tmp_path: Path,
) -> None:
    """Without pip's wheel the real script skips venv:pip; the fast profile promises a venv
    with pip, so that skip fails the verification, naming the check and the script's reason,
    unless --allow-skip venv:pip allowed it."""

    def no_wheel(tree: Path) -> None:
        for wheel in (tree / "lib/python3.13/ensurepip/_bundled").glob("*.whl"):
            wheel.unlink()

    archive, record = _broken(e2e_build, metadata, tmp_path, no_wheel)
    kwargs: dict[str, Any] = {
        "archive": archive,
        "metadata": record,
        "run_image": run_image_debian12,
        "builder_image": builder_image_debian12,
        "expected_modules": record["expected_modules"],
    }
    report = verify_archive(docker_client, **kwargs, log_path=tmp_path / "a.log")
    assert not report.ok
    assert [(f.name, f.detail) for f in report.failures] == [
        ("venv:pip", "required, but skipped: no ensurepip wheel in the runtime "
                     "(--allow-skip venv:pip accepts that)")
    ]  # fmt: skip
    assert "venv:pip" in _failure_message(report)
    allowed = verify_archive(
        docker_client, **kwargs, log_path=tmp_path / "b.log", allowed_skips=["venv:pip"]
    )
    assert allowed.ok
    assert allowed.metadata_fields()["verification"]["skipped"] == [
        {"check": "venv:pip", "reason": "no ensurepip wheel in the runtime",
         "required": True, "allowed": True}
    ]  # fmt: skip
    assert not leftover_verify_containers(docker_client, owner_pid=os.getpid())


def test_a_missing_module_fails_naming_it(
    e2e_build: E2EBuild,
    metadata: dict[str, Any],
    docker_client: DockerClient,
    run_image_debian12: str,
    builder_image_debian12: str,
    tmp_path: Path,
) -> None:
    def remove_ssl(tree: Path) -> None:
        modules = list((tree / "lib" / "python3.13" / "lib-dynload").glob("_ssl*.so"))
        assert modules
        for module in modules:
            module.unlink()

    archive, record = _broken(e2e_build, metadata, tmp_path, remove_ssl)
    report = _verify(
        docker_client,
        archive,
        record,
        run_image=run_image_debian12,
        builder_image=builder_image_debian12,
        log_path=tmp_path / "verify.log",
    )
    message = _failure_message(report)
    assert "import:ssl (" in message and "No module named '_ssl'" in message, message
    # The damage stays where it is: everything unrelated still passes.
    passed = {check.name for check in report.checks if check.ok}
    assert {"import:sqlite3", "ldd", "cext:import", "elf:rpath"} <= passed, message


@pytest.fixture
def run_image_without_sqlite(docker_client: DockerClient, run_image_debian12: str) -> Iterator[str]:
    """The run image minus libsqlite3-0 (purged offline, dependants left broken)."""
    container = docker_client.containers.run(
        run_image_debian12,
        ["dpkg", "--purge", "--force-depends", "libsqlite3-0"],
        network_disabled=True,
        detach=True,
    )
    try:
        status = container.wait()
        assert status["StatusCode"] == 0, container.logs().decode()
        image = container.commit(
            repository="python-farm-test/run-no-sqlite", tag=secrets.token_hex(4)
        )
    finally:
        container.remove(force=True)
    try:
        yield str(image.id)
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(str(image.id), force=True)


def test_a_library_absent_from_the_run_image_fails_ldd(
    e2e_build: E2EBuild,
    metadata: dict[str, Any],
    docker_client: DockerClient,
    run_image_without_sqlite: str,
    builder_image_debian12: str,
    tmp_path: Path,
) -> None:
    report = _verify(
        docker_client,
        e2e_build.archive,
        metadata,
        run_image=run_image_without_sqlite,
        builder_image=builder_image_debian12,
        log_path=tmp_path / "verify.log",
    )
    message = _failure_message(report)
    ldd = next(check for check in report.checks if check.name == "ldd")
    assert not ldd.ok
    assert "ldd (lib/python3.13/lib-dynload/_sqlite3." in message, message
    assert "libsqlite3.so.0 not found" in message, message
    assert "import:sqlite3" in message, message
    assert "libsqlite3-0" not in report.runtime_packages


def test_an_absolute_rpath_fails_the_audit(
    e2e_build: E2EBuild,
    metadata: dict[str, Any],
    docker_client: DockerClient,
    run_image_debian12: str,
    builder_image_debian12: str,
    tmp_path: Path,
) -> None:
    patchelf = shutil.which("patchelf")
    if patchelf is None:
        pytest.fail("patchelf is needed (scripts/setup-host.sh installs it)", pytrace=False)

    def absolute_rpath(tree: Path) -> None:
        subprocess.run(
            [patchelf, "--set-rpath", "/opt/python-farm/lib", str(tree / "bin" / "python3.13")],
            check=True,
        )

    archive, record = _broken(e2e_build, metadata, tmp_path, absolute_rpath)
    report = _verify(
        docker_client,
        archive,
        record,
        run_image=run_image_debian12,
        builder_image=builder_image_debian12,
        log_path=tmp_path / "verify.log",
    )
    message = _failure_message(report)
    assert "elf:rpath (bin/python3.13: " in message, message
    assert "/opt/python-farm/lib (absolute)" in message, message
    # /opt/python-farm/lib does not exist where the runtime is unpacked: it cannot even start.
    assert "exec:python3.13" in message, message
    assert "libpython3.13.so.1.0: cannot open shared object file" in message, message


SYSCONFIGDATA_SAMPLE = (
    Path(__file__).parents[1]
    / "unit"
    / "data"
    / "relocate"
    / "_sysconfigdata__linux_x86_64-linux-gnu.py.sample"
)


@pytest.mark.parametrize("left", ["pc", "sysconfigdata"])
def test_relocation_left_undone_fails_naming_the_checks(
    e2e_build: E2EBuild,
    metadata: dict[str, Any],
    docker_client: DockerClient,
    run_image_debian12: str,
    builder_image_debian12: str,
    consumer_image_debian12: str,
    tmp_path: Path,
    left: str,
) -> None:
    """An archive whose .pc file or sysconfig data still names the build prefix."""

    def unrelocate(tree: Path) -> None:
        if left == "pc":
            pc = tree / "lib" / "pkgconfig" / "python-3.13-embed.pc"
            pc.write_text(pc.read_text().replace("${pcfiledir}/../..", "/opt/python-farm"))
        else:
            # As `make install` wrote it (the sample is from this very build).
            data = tree / "lib" / "python3.13" / "_sysconfigdata__linux_x86_64-linux-gnu.py"
            data.write_text(SYSCONFIGDATA_SAMPLE.read_text())
            for pyc in (data.parent / "__pycache__").glob("_sysconfigdata_*.pyc"):
                pyc.unlink()  # else the relocated bytecode would still be imported

    archive, record = _broken(e2e_build, metadata, tmp_path, unrelocate)
    report = _verify(
        docker_client,
        archive,
        record,
        run_image=run_image_debian12,
        builder_image=builder_image_debian12,
        consumer_image=consumer_image_debian12,
        log_path=tmp_path / "verify.log",
    )
    message = _failure_message(report)
    # Failures only: a skip the stack's tools report (meson:python-setup on Debian 12) is not
    # one, unless it is of a required check.
    failed = {check.name for check in report.failures}
    if left == "pc":
        assert failed == {
            "relocate:build-prefix",
            "pkgconfig:flags",
            "pkgconfig:embed-build",
            "pkgconfig:embed-run",
        }, message
        assert "lib/pkgconfig/python-3.13-embed.pc" in message
    else:
        # Only these: the consumers (pkg-config, CMake, meson) do not need these variables;
        # python-config.py answers --prefix from them.
        assert failed == {
            "relocate:build-prefix",
            "relocate:build-dir",
            "sysconfig:relocated",
            "config:python-config-py",
        }, message
        assert "_sysconfigdata__linux_x86_64-linux-gnu.py" in message
        assert "LIBDIR=/opt/python-farm/lib" in message
