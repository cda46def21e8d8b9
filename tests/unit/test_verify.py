"""Verification without Docker: the script's line protocol, reports, and the host-side audit."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from orchestrator.errors import DockerError, VerificationError
from orchestrator.matrix import Arch
from orchestrator.verify import runtime as verify
from orchestrator.verify.elfaudit import ArchiveScan, ElfInfo
from orchestrator.verify.runtime import (
    CheckResult,
    VerificationReport,
    audit_checks,
    configured_prefix,
    parse_script_output,
    raise_for_failures,
)

SCRIPT_OUTPUT = """\
some log line the parser must ignore
CHECK extract ok unpacked at /srv/rt-abc
CHECK import:ssl fail exit 1: ModuleNotFoundError: No module named '_ssl'
CHECK venv:pip skip no ensurepip wheel in the runtime
CHECK ldd ok 64 files, all found
CHECK broken-line
CHECK name maybe not-a-status
PACKAGE libssl3:amd64 /usr/lib/x86_64-linux-gnu/libssl.so.3
PACKAGE libc6:amd64 /lib/x86_64-linux-gnu/libc.so.6
PACKAGE libc6:amd64 /lib64/ld-linux-x86-64.so.2
PACKAGE zlib1g /usr/lib/x86_64-linux-gnu/libz.so.1
WARN /usr/local/lib/libfoo.so.1 (needed by x) belongs to no apt package
DONE runtime
"""


def test_parse_script_output() -> None:
    output = parse_script_output(SCRIPT_OUTPUT)
    assert [(c.name, c.ok) for c in output.checks] == [
        ("extract", True),
        ("import:ssl", False),
        ("venv:pip", True),
        ("ldd", True),
    ]
    assert output.checks[1].detail == "exit 1: ModuleNotFoundError: No module named '_ssl'"
    assert output.checks[2].detail == "skipped: no ensurepip wheel in the runtime"
    # Sorted, de-duplicated, arch qualifiers stripped.
    assert output.packages == ["libc6", "libssl3", "zlib1g"]
    assert output.warnings == ["/usr/local/lib/libfoo.so.1 (needed by x) belongs to no apt package"]
    assert output.done


def test_parse_script_output_without_done() -> None:
    output = parse_script_output("CHECK extract ok x\r\n")
    assert not output.done
    assert output.checks == [CheckResult(name="extract", ok=True, detail="x")]


def _report(*checks: CheckResult, log: Path | None = None) -> VerificationReport:
    return VerificationReport(checks=list(checks), runtime_packages=[], warnings=[], log_path=log)


def test_report_ok_and_no_raise() -> None:
    report = _report(CheckResult(name="a", ok=True, detail=""))
    assert report.ok
    raise_for_failures(report, what="x")  # does not raise


def test_raise_names_every_failed_check_on_one_line(tmp_path: Path) -> None:
    report = _report(
        CheckResult(name="ldd", ok=False, detail="lib/x.so: libsqlite3.so.0 not found"),
        CheckResult(name="import:ssl", ok=False, detail="No module\nnamed '_ssl'"),
        CheckResult(name="exec:python3", ok=True, detail="3.13.5"),
        CheckResult(name="elf:rpath", ok=False, detail="x" * 1000),
        log=tmp_path / "verify.log",
    )
    assert not report.ok
    with pytest.raises(VerificationError) as caught:
        raise_for_failures(report, what="python-3.13.5-debian-12-amd64.tar.zst")
    error = caught.value
    assert error.exit_code == 9
    text = str(error)
    assert "\n" not in text
    assert "3 of 4 checks failed" in text
    assert "ldd (lib/x.so: libsqlite3.so.0 not found)" in text
    assert "import:ssl (No module named '_ssl')" in text
    assert "elf:rpath (xxx" in text and "...)" in text  # long details are cut
    assert "exec:python3" not in text
    assert str(tmp_path / "verify.log") in text


def test_failures_with_the_same_detail_are_grouped() -> None:
    cause = "exit 127: libpython3.13.so.1.0: cannot open shared object file"
    report = _report(
        CheckResult(name="exec:python3", ok=False, detail=cause),
        CheckResult(name="elf:rpath", ok=False, detail="bin/python3: RUNPATH /x (absolute)"),
        CheckResult(name="import:ssl", ok=False, detail=cause),
        CheckResult(name="extract", ok=False, detail=""),
    )
    assert verify.format_failures(report) == (
        f"exec:python3, import:ssl ({cause}); elf:rpath (bin/python3: RUNPATH /x (absolute)); "
        "extract"
    )


def test_metadata_fields() -> None:
    report = VerificationReport(
        checks=[CheckResult(name="a", ok=True, detail="")],
        runtime_packages=["libc6", "libssl3"],
        package_versions={"libssl3": "3.0.17-1~deb12u2", "libc6": "2.36-9+deb12u10"},
        warnings=["w"],
        seconds=12.345,
    )
    assert report.metadata_fields() == {
        "runtime_packages": ["libc6", "libssl3"],
        "run_image_packages": {"libc6": "2.36-9+deb12u10", "libssl3": "3.0.17-1~deb12u2"},
        "verification": {
            "ok": True,
            "failures": [],
            "checks": 1,
            "warnings": ["w"],
            "seconds": 12.3,
        },
    }
    failing = VerificationReport(
        checks=[CheckResult(name="import:ssl", ok=False, detail="No module named '_ssl'")],
        runtime_packages=[],
        warnings=[],
        seconds=1.0,
    )
    fields = failing.metadata_fields()["verification"]
    assert fields["ok"] is False
    assert fields["failures"] == ["import:ssl: No module named '_ssl'"]


# --- audit logic on synthetic scans ----------------------------------------------------------


def _elf(name: str, **kwargs: Any) -> ElfInfo:
    values: dict[str, Any] = {
        "machine": "EM_X86_64",
        "needed": (),
        "rpath": (),
        "runpath": (),
        "has_symtab": False,
    }
    values.update(kwargs)
    return ElfInfo(name=name, **values)


def _scan(*elves: ElfInfo, members: tuple[str, ...] = (), **kwargs: Any) -> ArchiveScan:
    names = members or ("bin", "include", "lib", *(e.name for e in elves))
    values: dict[str, Any] = {"unreadable_elves": (), "static_libs": (), "build_path_hits": ()}
    values.update(kwargs)
    return ArchiveScan(members=names, elves=elves, **values)


def _by_name(checks: list[CheckResult]) -> dict[str, CheckResult]:
    return {c.name: c for c in checks}


def test_audit_accepts_origin_rpath_on_the_executable_only() -> None:
    checks = _by_name(
        audit_checks(
            _scan(
                _elf("bin/python3.13", runpath=("$ORIGIN/../lib",)),
                _elf("lib/libpython3.13.so.1.0"),
            ),
            major_minor="3.13",
            arch=Arch.AMD64,
        )
    )
    assert all(c.ok for c in checks.values()), checks
    assert set(checks) == {
        "archive:layout",
        "archive:static-libs",
        "elf:read",
        "elf:arch",
        "elf:rpath",
        "elf:stripped",
        "pyc:unchecked-hash",
        "relocate:build-dir",
    }


def test_audit_rejects_other_search_paths() -> None:
    checks = _by_name(
        audit_checks(
            _scan(
                _elf("bin/python3.13", rpath=("/opt/python-farm/lib",)),
                _elf("lib/python3.13/lib-dynload/_ssl.so", runpath=("$ORIGIN",)),
            ),
            major_minor="3.13",
            arch=Arch.AMD64,
        )
    )
    detail = checks["elf:rpath"].detail
    assert not checks["elf:rpath"].ok
    assert "bin/python3.13: RPATH /opt/python-farm/lib (absolute)" in detail
    assert "bin/python3.13: no $ORIGIN/../lib search path" in detail
    assert "lib/python3.13/lib-dynload/_ssl.so: RUNPATH $ORIGIN (not allowed)" in detail


def test_audit_other_failures() -> None:
    checks = _by_name(
        audit_checks(
            _scan(
                _elf("bin/python3.13", runpath=("$ORIGIN/../lib",), has_symtab=True),
                members=("bin", "lib", "etc", "bin/python3.13"),
                static_libs=("lib/libpython3.13.a",),
                unreadable_elves=("lib/broken.so",),
                not_unchecked_pycs=("lib/python3.13/__pycache__/re.cpython-313.pyc",),
                build_path_hits=(
                    ("lib/python3.13/config-3.13/Makefile", "/tmp/python-build"),
                    ("lib/pkgconfig/python-3.13.pc", "/opt/python-farm"),
                    # As scan_archive reports a member naming both.
                    ("lib/python3.13/_sysconfigdata_x.py", "/tmp/python-build, /opt/python-farm"),
                ),
            ),
            major_minor="3.13",
            arch=Arch.ARM64,
            install_prefix="/opt/python-farm",
        )
    )
    assert checks["archive:layout"].detail == "missing: include; unexpected top-level entries: etc"
    assert "lib/libpython3.13.a" in checks["archive:static-libs"].detail
    assert "lib/broken.so" in checks["elf:read"].detail
    assert checks["elf:arch"].detail == "expected EM_AARCH64: bin/python3.13 is EM_X86_64"
    assert "bin/python3.13" in checks["elf:stripped"].detail
    assert "re.cpython-313.pyc" in checks["pyc:unchecked-hash"].detail
    assert checks["relocate:build-dir"].detail == (
        "text files name the build directory: lib/python3.13/config-3.13/Makefile "
        "(/tmp/python-build), lib/python3.13/_sysconfigdata_x.py (/tmp/python-build)"
    )
    assert checks["relocate:build-prefix"].detail == (
        "text files name the build prefix /opt/python-farm: lib/pkgconfig/python-3.13.pc, "
        "lib/python3.13/_sysconfigdata_x.py"
    )
    assert not any(c.ok for name, c in checks.items() if name != "elf:rpath")


def test_configured_prefix_comes_from_the_record() -> None:
    args = ["--build=x86_64-linux-gnu", "--prefix=/app/.heroku/python", "--enable-shared"]
    assert configured_prefix({"configure_args": args}) == "/app/.heroku/python"
    assert configured_prefix({}) is None  # a record older than configure_args
    assert configured_prefix({"configure_args": ["--prefix=relative"]}) is None


def test_audit_fails_without_the_executable() -> None:
    checks = _by_name(audit_checks(_scan(), major_minor="3.13", arch=None))
    assert "elf:arch" not in checks
    assert checks["elf:rpath"].detail == "bin/python3.13 is not in the archive"
    assert not checks["elf:read"].ok  # an archive without any ELF file is no runtime


# --- containers, with a fake engine ----------------------------------------------------------


class _FakeContainer:
    def __init__(self, output: bytes, *, fail_wait: bool = False) -> None:
        self.output = output
        self.fail_wait = fail_wait
        self.removed = False

    def start(self) -> None:
        pass

    def wait(self) -> dict[str, int]:
        if self.fail_wait:
            raise docker.errors.APIError("engine went away")
        return {"StatusCode": 0}

    def logs(self, *, stdout: bool, stderr: bool) -> bytes:
        return self.output if stdout else b""

    def remove(self, *, force: bool) -> None:
        self.removed = True

    def put_archive(self, path: str, data: Any) -> bool:
        with tarfile.open(fileobj=data, mode="r") as tar:
            self.put = (path, sorted(tar.getnames()))
        return True


class _FakeContainers:
    def __init__(self, container: _FakeContainer) -> None:
        self.container = container
        self.created: list[dict[str, Any]] = []

    def create(self, image: str, **kwargs: Any) -> _FakeContainer:
        self.created.append({"image": image, **kwargs})
        return self.container


class _FakeClient:
    def __init__(self, container: _FakeContainer) -> None:
        self.containers = _FakeContainers(container)


def _run_stage(
    client: Any, tmp_path: Path, *, copy: bool = False, build_prefix: str | None = None
) -> verify.ScriptOutput:
    archive = tmp_path / "a.tar.zst"
    archive.write_bytes(b"zstd")
    with (tmp_path / "log").open("w") as log:
        return verify._run_stage(
            client,
            stage="runtime",
            image="img",
            archive=archive,
            arch=Arch.AMD64,
            major_minor="3.13",
            modules=["ssl"],
            cell_id="3.13.5-debian-12-amd64",
            copy=copy,
            log=log,
            build_prefix=build_prefix,
        )


def test_stage_is_told_the_build_prefix_and_nothing_else(tmp_path: Path) -> None:
    client = _FakeClient(_FakeContainer(b"DONE runtime\n"))
    _run_stage(client, tmp_path, build_prefix="/app/.heroku/python")
    environment = client.containers.created[0]["environment"]
    assert environment == {"HOME": "/tmp", "FARM_BUILD_PREFIX": "/app/.heroku/python"}


def test_stage_container_is_isolated_and_removed(tmp_path: Path) -> None:
    container = _FakeContainer(b"CHECK extract ok x\nDONE runtime\n")
    client = _FakeClient(container)
    output = _run_stage(client, tmp_path)
    assert output.checks == [CheckResult(name="extract", ok=True, detail="x")]
    assert container.removed
    created = client.containers.created[0]
    assert created["labels"]["org.python-farm.role"] == "verify"
    assert created["labels"]["org.python-farm.cell"] == "3.13.5-debian-12-amd64"
    assert created["network_disabled"] is True
    assert created["environment"] == {"HOME": "/tmp"}  # an allow-list, nothing from the host
    assert created["cap_drop"] == ["ALL"]
    assert created["security_opt"] == ["no-new-privileges:true"]
    assert created["user"] != "0:0" and not created["user"].startswith("0:")
    assert "exec" in created["tmpfs"]["/tmp"].split(",")
    assert all(v["mode"] == "ro" for v in created["volumes"].values())
    command = created["command"]
    assert command[:3] == ["bash", "/farm/recipe/verify-runtime.sh", "runtime"]
    assert command[3].startswith("/tmp/rt-") and len(command[3]) == len("/tmp/rt-") + 16
    assert command[4:] == ["3.13", "ssl"]


def test_stage_copies_inputs_for_a_remote_engine(tmp_path: Path) -> None:
    container = _FakeContainer(b"DONE runtime\n")
    client = _FakeClient(container)
    _run_stage(client, tmp_path, copy=True)
    assert client.containers.created[0]["volumes"] is None
    path, names = container.put
    assert path == "/"
    assert "farm/archive.tar.zst" in names
    assert "farm/recipe/verify-runtime.sh" in names
    assert not [n for n in names if "__pycache__" in n]
    assert container.removed


def test_stage_that_stops_early_is_a_failed_check(tmp_path: Path) -> None:
    output = _run_stage(_FakeClient(_FakeContainer(b"CHECK extract ok x\n")), tmp_path)
    assert [(c.name, c.ok) for c in output.checks] == [("extract", True), ("script:runtime", False)]


def test_engine_failure_is_a_docker_error_and_removes_the_container(tmp_path: Path) -> None:
    container = _FakeContainer(b"", fail_wait=True)
    with pytest.raises(DockerError):
        _run_stage(_FakeClient(container), tmp_path)
    assert container.removed


def test_verify_script_is_valid_bash() -> None:
    script = verify.RECIPE_DIR / verify.VERIFY_SCRIPT
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_load_metadata(tmp_path: Path) -> None:
    archive = tmp_path / "python-3.13.5-debian-12-amd64.tar.zst"
    assert verify.metadata_path_for(archive) == tmp_path / "python-3.13.5-debian-12-amd64.json"
    with pytest.raises(VerificationError, match="no metadata record"):
        verify.load_metadata(archive)
    verify.metadata_path_for(archive).write_text('{"arch": "amd64"}')
    with pytest.raises(VerificationError, match="not a metadata record"):
        verify.load_metadata(archive)
    verify.metadata_path_for(archive).write_text('{"arch": "amd64", "major": 3, "minor": 13}')
    assert verify.load_metadata(archive)["minor"] == 13
