"""Verification without Docker: the script's line protocol, reports, and the host-side audit."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests.exceptions

from orchestrator.errors import DockerError, VerificationError
from orchestrator.matrix import Arch
from orchestrator.verify import runtime as verify
from orchestrator.verify.elfaudit import ArchiveScan, ElfInfo
from orchestrator.verify.elfharden import ElfHardening
from orchestrator.verify.runtime import (
    CheckResult,
    VerificationReport,
    audit_checks,
    configured_prefix,
    hardening_summary,
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
        ("venv:pip", False),
        ("ldd", True),
    ]
    assert output.checks[1].detail == "exit 1: ModuleNotFoundError: No module named '_ssl'"
    # A skip is neither ok nor a failure: it is a skip, with its reason.
    assert [c.skipped for c in output.checks] == [False, False, True, False]
    assert output.checks[2].detail == "no ensurepip wheel in the runtime"
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
            "required": [],
            "skipped": [],
            "allowed_skips": [],
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
    audited = VerificationReport(
        checks=[], runtime_packages=[], warnings=[], hardening={"elf_files": 3, "relro": 3}
    )
    assert audited.metadata_fields()["verification"]["hardening"] == {"elf_files": 3, "relro": 3}


# --- audit logic on synthetic scans ----------------------------------------------------------


# A linked file as the farm's flags make it: every hardening property in place.
HARDENED = ElfHardening(
    linked=True,
    gnu_stack=True,
    exec_stack=False,
    wx_load=False,
    relro=True,
    dynamic=True,
    bind_now=True,
    textrel=False,
    stack_protector=True,
    fortified=("__memcpy_chk", "__snprintf_chk"),
)
# A small extension module: hardened by the linker, nothing for the compiler to guard.
BARE = dataclasses.replace(HARDENED, stack_protector=False, fortified=())


def _elf(name: str, **kwargs: Any) -> ElfInfo:
    values: dict[str, Any] = {
        "machine": "EM_X86_64",
        "needed": (),
        "rpath": (),
        "runpath": (),
        "has_symtab": False,
        "hardening": HARDENED,
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
        "elf:nx-stack",
        "elf:wx-load",
        "elf:relro",
        "elf:bind-now",
        "elf:textrel",
        "elf:stack-protector",
        "elf:fortify",
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
    assert {n for n, c in checks.items() if not c.ok} == {
        "archive:layout",
        "archive:static-libs",
        "elf:read",
        "elf:arch",
        "elf:stripped",
        "pyc:unchecked-hash",
        "relocate:build-dir",
        "relocate:build-prefix",
    }


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


def test_hardening_failures_name_file_and_property() -> None:
    hardening = {
        "lib/python3.13/lib-dynload/_a.so": dataclasses.replace(BARE, gnu_stack=False),
        "lib/python3.13/lib-dynload/_b.so": dataclasses.replace(BARE, exec_stack=True),
        "lib/python3.13/lib-dynload/_c.so": dataclasses.replace(BARE, wx_load=True),
        "lib/python3.13/lib-dynload/_d.so": dataclasses.replace(BARE, relro=False),
        "lib/python3.13/lib-dynload/_e.so": dataclasses.replace(BARE, bind_now=False),
        "lib/python3.13/lib-dynload/_f.so": dataclasses.replace(BARE, textrel=True),
    }
    checks = _by_name(
        audit_checks(
            _scan(
                _elf("bin/python3.13", runpath=("$ORIGIN/../lib",), hardening=BARE),
                _elf("lib/libpython3.13.so.1.0", hardening=BARE),
                *(_elf(name, hardening=h) for name, h in hardening.items()),
            ),
            major_minor="3.13",
            arch=Arch.AMD64,
        )
    )
    dynload = "lib/python3.13/lib-dynload"
    assert checks["elf:nx-stack"].detail == (
        f"2 files: {dynload}/_a.so: no PT_GNU_STACK, "
        f"{dynload}/_b.so: executable stack (PF_X on PT_GNU_STACK)"
    )
    assert checks["elf:wx-load"].detail == (
        f"1 files: {dynload}/_c.so: writable and executable PT_LOAD"
    )
    assert checks["elf:relro"].detail == f"1 files: {dynload}/_d.so: no PT_GNU_RELRO"
    assert checks["elf:bind-now"].detail == (
        f"1 files: {dynload}/_e.so: lazy binding (no DT_BIND_NOW, DF_BIND_NOW or DF_1_NOW)"
    )
    assert (
        checks["elf:textrel"].detail == f"1 files: {dynload}/_f.so: text relocations (DT_TEXTREL)"
    )
    # The executable around a shared libpython is not asked; libpython is, and fails both.
    assert checks["elf:stack-protector"].detail == (
        "lib/libpython3.13.so.1.0: no __stack_chk_fail (built without -fstack-protector-strong?)"
        "; 0 of 8 files do"
    )
    assert checks["elf:fortify"].detail == (
        "lib/libpython3.13.so.1.0: no __*_chk import (built without -D_FORTIFY_SOURCE=2 -O2?)"
        "; 0 of 8 files import some"
    )
    assert {n for n, c in checks.items() if not c.ok} == {
        "elf:nx-stack",
        "elf:wx-load",
        "elf:relro",
        "elf:bind-now",
        "elf:textrel",
        "elf:stack-protector",
        "elf:fortify",
    }


def test_hardening_scope() -> None:
    """Object files are not judged; a static executable needs no BIND_NOW; without a libpython
    the executable is the interpreter's code; extension modules need no compiler symbols."""
    static = dataclasses.replace(HARDENED, dynamic=False, bind_now=False)
    obj = ElfHardening(
        linked=False,
        gnu_stack=False,
        exec_stack=False,
        wx_load=False,
        relro=False,
        dynamic=False,
        bind_now=False,
        textrel=False,
        stack_protector=False,
        fortified=(),
    )
    elves = (
        _elf("bin/python3.13", runpath=("$ORIGIN/../lib",), hardening=static),
        _elf("lib/python3.13/config-3.13-x86_64-linux-gnu/python.o", hardening=obj),
        _elf("lib/python3.13/lib-dynload/_bisect.so", hardening=BARE),
    )
    checks = _by_name(audit_checks(_scan(*elves), major_minor="3.13", arch=None))
    assert all(c.ok for c in checks.values()), checks
    assert checks["elf:nx-stack"].detail == "2 files: PT_GNU_STACK without PF_X"
    assert checks["elf:fortify"].detail == (
        "bin/python3.13 imports 2 __*_chk functions (__memcpy_chk, __snprintf_chk)"
        "; 1 of 2 files import some"
    )
    assert hardening_summary(elves, major_minor="3.13") == {
        "elf_files": 2,
        "nx_stack": 2,
        "relro": 2,
        "bind_now": 2,
        "no_textrel": 2,
        "stack_protector": 1,
        "fortified": 1,
        "interpreter": "bin/python3.13",
        "interpreter_fortified": ["__memcpy_chk", "__snprintf_chk"],
    }


def test_free_threaded_libpython_is_the_interpreter() -> None:
    elves = (
        _elf("bin/python3.13", runpath=("$ORIGIN/../lib",), hardening=BARE),
        _elf("lib/libpython3.so", hardening=BARE),  # the stable-ABI shim: no code of its own
        _elf("lib/libpython3.13t.so.1.0"),
    )
    checks = _by_name(audit_checks(_scan(*elves), major_minor="3.13", arch=None))
    assert checks["elf:stack-protector"].ok
    assert checks["elf:stack-protector"].detail.startswith("lib/libpython3.13t.so.1.0 references")


def test_hardening_without_interpreter_fails() -> None:
    checks = _by_name(audit_checks(_scan(_elf("lib/libfoo.so")), major_minor="3.13", arch=None))
    missing = "neither lib/libpython3.13.so* nor bin/python3.13 to check"
    assert (checks["elf:stack-protector"].ok, checks["elf:stack-protector"].detail) == (
        False,
        missing,
    )
    assert (checks["elf:fortify"].ok, checks["elf:fortify"].detail) == (False, missing)


# --- containers, with a fake engine ----------------------------------------------------------


class _FakeContainer:
    def __init__(
        self,
        output: bytes,
        *,
        fail_wait: bool = False,
        hang: bool = False,
        exit_code: int = 0,
        oom_killed: bool = False,
    ) -> None:
        self.output = output
        self.fail_wait = fail_wait
        self.hang = hang
        self.exit_code = exit_code
        self.attrs: dict[str, Any] = {"State": {"OOMKilled": oom_killed}}
        self.removed = False
        self.wait_timeout: float | None = None

    def start(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> dict[str, int]:
        self.wait_timeout = timeout
        if self.fail_wait:
            raise docker.errors.APIError("engine went away")
        if self.hang:  # what docker-py raises when the engine has not answered in `timeout`
            raise requests.exceptions.ReadTimeout("read timed out")
        return {"StatusCode": self.exit_code}

    def reload(self) -> None:
        pass

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


def test_stage_container_has_memory_and_time_limits(tmp_path: Path) -> None:
    container = _FakeContainer(b"DONE runtime\n")
    client = _FakeClient(container)
    _run_stage(client, tmp_path)
    created = client.containers.created[0]
    assert created["mem_limit"] == created["memswap_limit"] == verify.STAGE_MEMORY_BYTES
    # /tmp's tmpfs counts against the memory limit, so it must fit inside it.
    size = created["tmpfs"]["/tmp"].split("size=")[1].split(",")[0]
    assert int(size) < verify.STAGE_MEMORY_BYTES
    assert container.wait_timeout == verify.STAGE_TIMEOUT_SECONDS


def test_a_hung_stage_is_killed_and_fails_naming_the_time_limit(tmp_path: Path) -> None:
    container = _FakeContainer(b"CHECK extract ok x\n", hang=True)
    archive = tmp_path / "a.tar.zst"
    archive.write_bytes(b"zstd")
    with (tmp_path / "log").open("w") as log:
        output = verify._run_stage(
            _FakeClient(container),
            stage="extension",
            image="img",
            archive=archive,
            arch=Arch.AMD64,
            major_minor="3.13",
            modules=[],
            cell_id="3.13.5-debian-12-amd64",
            copy=False,
            log=log,
            timeout_seconds=90,
        )
    assert container.removed  # force-removed: killed
    failed = [c for c in output.checks if not c.ok]
    assert [c.name for c in failed] == ["script:extension"]
    assert "stopped early (timed out after 1.5 min (killed))" in failed[0].detail


def test_a_stage_killed_for_memory_says_so(tmp_path: Path) -> None:
    container = _FakeContainer(b"", exit_code=137, oom_killed=True)
    output = _run_stage(_FakeClient(container), tmp_path)
    (failed,) = [c for c in output.checks if not c.ok]
    assert "stopped early (ran out of memory (3 GiB limit))" in failed.detail


def test_a_stage_whose_child_was_killed_for_memory_fails_though_the_script_finished(
    tmp_path: Path,
) -> None:
    container = _FakeContainer(b"CHECK exec:python fail exit 137\nDONE runtime\n", oom_killed=True)
    output = _run_stage(_FakeClient(container), tmp_path)
    (script,) = [c for c in output.checks if c.name == "script:runtime"]
    assert "ran out of memory (3 GiB limit): the kernel killed a process of it" in script.detail


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
    record = {
        "arch": "amd64", "major": 3, "minor": 13, "version": "3.13.5", "stack": "debian-12",
        "sha256": "0" * 64, "expected_modules": ["ssl"],
    }  # fmt: skip
    verify.metadata_path_for(archive).write_text(json.dumps(record))
    assert verify.load_metadata(archive)["minor"] == 13
    # What verification takes from the record is checked: an arch the farm does not build
    # (finding 8 of issue 16: a ValueError traceback) is one line naming the field.
    verify.metadata_path_for(archive).write_text(json.dumps({**record, "arch": "mips"}))
    with pytest.raises(VerificationError, match=r"not a metadata record of the farm \(arch: "):
        verify.load_metadata(archive)
