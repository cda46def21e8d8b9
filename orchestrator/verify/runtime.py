"""Verify a packed runtime before anything is published, the way careful distributors do.

Four vantage points (five for a JIT build), every check reported by name:

1. On the host, without Docker: the archive's members and ELF files (verify/elfaudit.py):
   checksum, layout, no static libraries, the right machine, stripped, and no rpath but
   `$ORIGIN/../lib` on the executable; no text member names the build directory or configure's
   prefix (recipe/relocate.py made them follow the unpacked tree).
   Hardening (verify/elfharden.py): non-executable stack, no W+X segment, full RELRO, no
   text relocations, stack protector and _FORTIFY_SOURCE.
2. In a clean container of the stack's run image (no compilers, no network, no
   LD_LIBRARY_PATH), the archive unpacked at a fresh random path: the executables and
   python3-config, linkage (`ldd`, mapped to apt packages with `dpkg-query -S`), every expected
   module, codec round trips, recursion in a thread, venv + pip, and sysconfig.
3. In a container of the builder image (it has gcc): a C extension built with the flags
   sysconfig records, and programs embedding libpython (with and without a home).
4. In a container of the consumer image (the builder plus CMake, meson, ninja): what users'
   build tools make of the runtime at that path: pkg-config's python3-embed, CMake's
   FindPython (an extension module and an embedding program) and meson's python module.
5. Runtimes built with the experimental JIT (the record's `jit`), again in the run image: the
   JIT is off by default and compiles a hot loop under PYTHON_JIT=1, and the imports, round
   trips and recursion checks pass with it on (named jit:...).

A runtime built for an x86-64 level (the record's `cpu_level`) is also audited on the host for
the loader's ISA marker on every linked file (`elf:isa-level`), and its containers run only on
a machine with that level (`cpu:level`): elsewhere they cannot start, so their stages are
reported as skipped with the reason, and verification fails unless the caller allows that skip
(`--allow-skip cpu:level`, verify/required.py).

The container side is recipe/verify-runtime.sh; it prints `CHECK <name> ok|fail|skip <detail>`
lines that are parsed here. A skipped check is not a passed one: the checks a runtime must pass
are declared per variant and profile (verify/required.py), and a verification where one of them
was skipped or never reported fails, unless the caller allowed that skip by name. A failed
verification raises VerificationError (exit code 9).
"""

from __future__ import annotations

import re
import secrets
import tarfile
import tempfile
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import docker.errors
import requests.exceptions
from docker import DockerClient
from docker.models.containers import Container

from orchestrator.archive import sha256_of
from orchestrator.buildspec import RECIPE_DIR
from orchestrator.cellbuild import (
    CELL_LABEL,
    OWNER_LABEL,
    ROLE_LABEL,
    Transfer,
    is_local_engine,
    oom_killed,
    owner,
    remove_container,
)
from orchestrator.errors import DockerError, PackagingError, VerificationError
from orchestrator.matrix import Arch, CpuLevel, VariantName
from orchestrator.safetar import RUNTIME_LIMITS, Limits
from orchestrator.sandbox import confinement, sandbox_user
from orchestrator.verify.cpulevel import CpuFlagsReader, engine_cpu_flags, has_level, lacks
from orchestrator.verify.elfaudit import BUILD_PATH_MARKERS, ArchiveScan, ElfInfo, scan_archive
from orchestrator.verify.required import CPU_LEVEL, required_checks_of

VERIFY_SCRIPT = "verify-runtime.sh"
# Bounds for each verification container. A fast stage takes about a minute and a few hundred
# MB (the consumer stage compiles with CMake and meson); arm64 under qemu is ~10x slower.
# Generous, but a hung check can no longer hold a nightly slot, nor one stage the machine.
STAGE_MEMORY_BYTES = 3 * 1024**3
STAGE_TIMEOUT_SECONDS = 45 * 60
# A tmpfs counts against the memory limit: /tmp gets most of it (runtime + builds ~ 300 MB).
STAGE_TMPFS_BYTES = 2 * 1024**3
ARCHIVE_IN_CONTAINER = "/farm/archive.tar.zst"
# Top-level directories a flat runtime may hold; bin, include and lib are required.
REQUIRED_TOP = ("bin", "include", "lib")
ALLOWED_TOP = (*REQUIRED_TOP, "share")  # share/man: `make install` puts the man page there
EXECUTABLE_RPATH = "$ORIGIN/../lib"
ELF_MACHINES = {Arch.AMD64: "EM_X86_64", Arch.ARM64: "EM_AARCH64"}
_DETAIL_LIMIT = 240

Stage = Literal["runtime", "extension", "consumers", "jit"]
# The check a level runtime's verification fails on a machine without its level, unless the
# caller allows the skip (`orchestrator verify --allow-skip cpu:level`).
CPU_LEVEL_CHECK = CPU_LEVEL


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    # Reported as skipped: it did not run (`ok` is False), `detail` says why.
    skipped: bool = False


def skipped(name: str, reason: str) -> CheckResult:
    """A check that did not run, as verify-runtime.sh's `skip` lines are read: why, in detail."""
    return CheckResult(name=name, ok=False, detail=reason, skipped=True)


@dataclass(frozen=True, kw_only=True)
class VerificationReport:
    checks: list[CheckResult]
    runtime_packages: list[str]  # apt packages providing the libraries the runtime links
    warnings: list[str]  # e.g. members that still name the build directory
    # Installed versions, in the run image, of runtime_packages and the stack's run packages.
    package_versions: dict[str, str] = field(default_factory=dict)
    needed: dict[str, list[str]] = field(default_factory=dict)  # ELF member -> DT_NEEDED
    hardening: dict[str, Any] = field(default_factory=dict)  # hardening_summary of the audit
    seconds: float = 0.0
    log_path: Path | None = None
    # Checks that must be reported and pass (verify/required.py), and the required checks the
    # caller allowed to be skipped (--allow-skip).
    required: tuple[str, ...] = ()
    allowed_skips: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def skips(self) -> list[CheckResult]:
        return [check for check in self.checks if check.skipped]

    @property
    def failures(self) -> list[CheckResult]:
        """Failed checks, required checks that were skipped (unless allowed), and required
        checks that were never reported."""
        failed = [check for check in self.checks if not check.ok and not check.skipped]
        for check in self.skips:
            if check.name in self.required and check.name not in self.allowed_skips:
                failed.append(
                    CheckResult(
                        name=check.name,
                        ok=False,
                        detail=f"required, but skipped: {check.detail} "
                        f"(--allow-skip {check.name} accepts that)",
                    )
                )
        reported = {check.name for check in self.checks}
        failed.extend(
            CheckResult(name=name, ok=False, detail="required, but never reported")
            for name in self.required
            if name not in reported
        )
        return failed

    def metadata_fields(self) -> dict[str, Any]:
        """What the archive's metadata record keeps of this verification; `ok` is what
        publishing looks at."""
        return {
            "runtime_packages": list(self.runtime_packages),
            "run_image_packages": dict(sorted(self.package_versions.items())),
            "verification": {
                "ok": self.ok,
                "failures": [f"{c.name}: {c.detail}" for c in self.failures],
                "checks": len(self.checks),
                "required": list(self.required),
                # Every skip with its reason; a required one passes only when allowed.
                "skipped": [
                    {
                        "check": c.name,
                        "reason": c.detail,
                        "required": c.name in self.required,
                        "allowed": c.name in self.allowed_skips,
                    }
                    for c in self.skips
                ],
                "allowed_skips": list(self.allowed_skips),
                "warnings": list(self.warnings),
                "seconds": round(self.seconds, 1),
            }
            | ({"hardening": dict(self.hardening)} if self.hardening else {}),
        }


@dataclass(frozen=True, kw_only=True)
class ScriptOutput:
    """What one run of verify-runtime.sh reported."""

    checks: list[CheckResult]
    packages: list[str]
    warnings: list[str]
    done: bool


def parse_script_output(text: str) -> ScriptOutput:
    """Parse the line protocol of recipe/verify-runtime.sh; other lines are ignored."""
    checks: list[CheckResult] = []
    packages: set[str] = set()
    warnings: list[str] = []
    done = False
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        kind, _, rest = line.partition(" ")
        if kind == "CHECK":
            name, _, rest = rest.partition(" ")
            status, _, detail = rest.partition(" ")
            if not name or status not in {"ok", "fail", "skip"}:
                continue
            checks.append(
                CheckResult(
                    name=name, ok=status == "ok", detail=detail.strip(), skipped=status == "skip"
                )
            )
        elif kind == "PACKAGE":
            package = rest.split(" ", 1)[0]
            if package:
                # dpkg-query prints multi-arch names as "libssl3:amd64".
                packages.add(package.split(":", 1)[0])
        elif kind == "WARN" and rest:
            warnings.append(rest.strip())
        elif kind == "DONE":
            done = True
    return ScriptOutput(checks=checks, packages=sorted(packages), warnings=warnings, done=done)


def format_failures(report: VerificationReport) -> str:
    """`name (detail); name, name (detail)` for every failed check, on one line.

    Checks failing with the same detail share it: when the interpreter cannot start, thirty
    checks fail the same way and the cause should be read once.
    """
    groups: dict[str, list[str]] = {}
    for check in report.failures:
        detail = " ".join(check.detail.split())
        if len(detail) > _DETAIL_LIMIT:
            detail = detail[: _DETAIL_LIMIT - 3] + "..."
        groups.setdefault(detail, []).append(check.name)
    return "; ".join(
        f"{', '.join(names)} ({detail})" if detail else ", ".join(names)
        for detail, names in groups.items()
    )


def raise_for_failures(report: VerificationReport, *, what: str) -> None:
    """Raise one VerificationError naming every failed check of `report`; do nothing if ok."""
    failures = report.failures
    if not failures:
        return
    hint = f"full log: {report.log_path}" if report.log_path else None
    raise VerificationError(
        f"{what} failed verification: {len(failures)} of {len(report.checks)} checks failed: "
        f"{format_failures(report)}",
        hint=hint,
    )


# --- host-side audit -----------------------------------------------------------------------


def audit_checks(
    scan: ArchiveScan,
    *,
    major_minor: str,
    arch: Arch | None,
    install_prefix: str | None = None,
    cpu_level: CpuLevel | None = None,
) -> list[CheckResult]:
    """Judge the facts scan_archive gathered.

    `install_prefix` is configure's --prefix: a text member naming it (like one naming the build
    directory) reports a path of the build host instead of where the runtime is unpacked.
    """
    executable = f"bin/python{major_minor}"
    checks = [_layout_check(scan.members)]
    # A hit lists every marker its member names, joined by ", " (elfaudit.scan_archive).
    found = [(name, markers.split(", ")) for name, markers in scan.build_path_hits]
    build_dir = [
        f"{name} ({', '.join(m for m in names if m.encode() in BUILD_PATH_MARKERS)})"
        for name, names in found
        if any(m.encode() in BUILD_PATH_MARKERS for m in names)
    ]
    checks.append(
        CheckResult(
            name="relocate:build-dir",
            ok=not build_dir,
            detail=(
                f"text files name the build directory: {_some(build_dir)}"
                if build_dir
                else "no text file names the build directory"
            ),
        )
    )
    if install_prefix is not None:
        named = [name for name, names in found if install_prefix in names]
        checks.append(
            CheckResult(
                name="relocate:build-prefix",
                ok=not named,
                detail=(
                    f"text files name the build prefix {install_prefix}: {_some(named)}"
                    if named
                    else f"no text file names the build prefix {install_prefix}"
                ),
            )
        )
    checks.append(
        CheckResult(
            name="archive:static-libs",
            ok=not scan.static_libs,
            detail=(
                f"static libraries: {', '.join(scan.static_libs)}"
                if scan.static_libs
                else "no *.a members"
            ),
        )
    )
    checks.append(
        CheckResult(
            name="elf:read",
            ok=bool(scan.elves) and not scan.unreadable_elves,
            detail=(
                f"unparseable ELF files: {', '.join(scan.unreadable_elves)}"
                if scan.unreadable_elves
                else f"{len(scan.elves)} ELF files"
            ),
        )
    )
    if arch is not None:
        want = ELF_MACHINES[arch]
        wrong = [f"{e.name} is {e.machine}" for e in scan.elves if e.machine != want]
        checks.append(
            CheckResult(
                name="elf:arch",
                ok=not wrong,
                detail=f"expected {want}: {', '.join(wrong)}" if wrong else f"all {want}",
            )
        )
    pycs = scan.not_unchecked_pycs
    checks.append(
        CheckResult(
            name="pyc:unchecked-hash",
            ok=not pycs,
            detail=(
                f"{len(pycs)} .pyc not unchecked-hash: {_some(pycs)}"
                if pycs
                else "every .pyc is unchecked-hash"
            ),
        )
    )
    rpath_problems = [p for e in scan.elves for p in _rpath_problems(e, executable)]
    if executable not in {e.name for e in scan.elves}:
        rpath_problems.insert(0, f"{executable} is not in the archive")
    checks.append(
        CheckResult(
            name="elf:rpath",
            ok=not rpath_problems,
            detail=(
                "; ".join(rpath_problems)
                if rpath_problems
                else f"only {executable} has one: {EXECUTABLE_RPATH}"
            ),
        )
    )
    unstripped = [e.name for e in scan.elves if e.has_symtab]
    checks.append(
        CheckResult(
            name="elf:stripped",
            ok=not unstripped,
            detail=(
                f"{len(unstripped)} files have a .symtab: {_some(unstripped)}"
                if unstripped
                else "no .symtab anywhere"
            ),
        )
    )
    checks.extend(hardening_checks(scan.elves, major_minor=major_minor))
    if cpu_level is not None:
        checks.append(isa_level_check(scan.elves, cpu_level))
    return checks


def isa_level_check(elves: Sequence[ElfInfo], level: CpuLevel) -> CheckResult:
    """Every linked ELF file carries the level in GNU_PROPERTY_X86_ISA_1_NEEDED (`ld -z
    x86-64-vN`): glibc's loader then refuses the runtime on an older CPU with "CPU ISA level
    is lower than required" instead of letting it die of SIGILL somewhere later."""
    linked = [e for e in elves if e.hardening.linked]
    unmarked = [e.name for e in linked if not e.x86_isa_needed & level.isa_bit]
    if not linked:
        return CheckResult(name="elf:isa-level", ok=False, detail="no linked ELF file to check")
    return CheckResult(
        name="elf:isa-level",
        ok=not unmarked,
        detail=(
            f"{len(unmarked)} of {len(linked)} files do not need {level.march} "
            f"(GNU_PROPERTY_X86_ISA_1_NEEDED): {_some(unmarked)}"
            if unmarked
            else f"{len(linked)} files: GNU_PROPERTY_X86_ISA_1_NEEDED has {level.march}"
        ),
    )


# --- ELF hardening (python-build-standalone's validate_elf; facts from verify/elfharden.py) ---


def hardening_checks(elves: Sequence[ElfInfo], *, major_minor: str) -> list[CheckResult]:
    """Every linked ELF file: non-executable stack, no W+X segment, full RELRO, no text
    relocations. The interpreter's code: stack protector and _FORTIFY_SOURCE in effect."""
    linked = [e for e in elves if e.hardening.linked]
    checks = [
        _every_file(
            "elf:nx-stack",
            [
                f"{e.name}: "
                + ("executable stack (PF_X on PT_GNU_STACK)" if h.gnu_stack else "no PT_GNU_STACK")
                for e in linked
                if not (h := e.hardening).gnu_stack or h.exec_stack
            ],
            ok=f"{len(linked)} files: PT_GNU_STACK without PF_X",
        ),
        _every_file(
            "elf:wx-load",
            [f"{e.name}: writable and executable PT_LOAD" for e in linked if e.hardening.wx_load],
            ok=f"{len(linked)} files: no PT_LOAD both PF_W and PF_X",
        ),
        _every_file(
            "elf:relro",
            [f"{e.name}: no PT_GNU_RELRO" for e in linked if not e.hardening.relro],
            ok=f"{len(linked)} files: PT_GNU_RELRO",
        ),
        # Without a dynamic section there is nothing to bind (a static executable).
        _every_file(
            "elf:bind-now",
            [
                f"{e.name}: lazy binding (no DT_BIND_NOW, DF_BIND_NOW or DF_1_NOW)"
                for e in linked
                if e.hardening.dynamic and not e.hardening.bind_now
            ],
            ok=f"{len(linked)} files: BIND_NOW",
        ),
        _every_file(
            "elf:textrel",
            [f"{e.name}: text relocations (DT_TEXTREL)" for e in linked if e.hardening.textrel],
            ok=f"{len(linked)} files: no DT_TEXTREL",
        ),
    ]
    checks.extend(_compiler_hardening(linked, major_minor))
    return checks


def interpreter_core(elves: Sequence[ElfInfo], major_minor: str) -> ElfInfo | None:
    """The file holding the interpreter's compiled code: libpython when the runtime ships one
    (then bin/pythonX.Y is a bare `main` calling Py_BytesMain), else the executable."""
    library = re.compile(rf"lib/libpython{re.escape(major_minor)}[a-z]*\.so(\.[0-9.]+)?")
    by_name = {e.name: e for e in elves}
    cores = [e for e in elves if library.fullmatch(e.name)]
    return cores[0] if cores else by_name.get(f"bin/python{major_minor}")


def _compiler_hardening(linked: Sequence[ElfInfo], major_minor: str) -> list[CheckResult]:
    """-fstack-protector-strong only instruments functions with arrays or address-taken
    locals, and _FORTIFY_SOURCE only rewrites calls whose buffer sizes the compiler knows: a
    small extension module (or bin/pythonX.Y around a shared libpython) may rightly have
    neither symbol. Like python-build-standalone, these are required of the interpreter's own
    code only, where thousands of functions make their absence proof of a missing flag; the
    other files are counted in the detail."""
    core = interpreter_core(linked, major_minor)
    guarded = sum(e.hardening.stack_protector for e in linked)
    fortified = sum(bool(e.hardening.fortified) for e in linked)
    if core is None:
        missing = f"neither lib/libpython{major_minor}.so* nor bin/python{major_minor} to check"
        return [
            CheckResult(name="elf:stack-protector", ok=False, detail=missing),
            CheckResult(name="elf:fortify", ok=False, detail=missing),
        ]
    names = core.hardening.fortified
    return [
        CheckResult(
            name="elf:stack-protector",
            ok=core.hardening.stack_protector,
            detail=(
                f"{core.name} references __stack_chk_fail"
                if core.hardening.stack_protector
                else f"{core.name}: no __stack_chk_fail (built without -fstack-protector-strong?)"
            )
            + f"; {guarded} of {len(linked)} files do",
        ),
        CheckResult(
            name="elf:fortify",
            ok=bool(names),
            detail=(
                f"{core.name} imports {len(names)} __*_chk functions ({_some(names, 4)})"
                if names
                else f"{core.name}: no __*_chk import (built without -D_FORTIFY_SOURCE=2 -O2?)"
            )
            + f"; {fortified} of {len(linked)} files import some",
        ),
    ]


def hardening_summary(elves: Sequence[ElfInfo], *, major_minor: str) -> dict[str, Any]:
    """What the metadata record keeps: per property, how many linked ELF files have it."""
    linked = [e.hardening for e in elves if e.hardening.linked]
    core = interpreter_core([e for e in elves if e.hardening.linked], major_minor)
    return {
        "elf_files": len(linked),
        "nx_stack": sum(h.gnu_stack and not h.exec_stack for h in linked),
        "relro": sum(h.relro for h in linked),
        "bind_now": sum(h.bind_now or not h.dynamic for h in linked),
        "no_textrel": sum(not h.textrel for h in linked),
        "stack_protector": sum(h.stack_protector for h in linked),
        "fortified": sum(bool(h.fortified) for h in linked),
        "interpreter": core.name if core else None,
        "interpreter_fortified": list(core.hardening.fortified) if core else [],
    }


def _every_file(name: str, problems: Sequence[str], *, ok: str) -> CheckResult:
    return CheckResult(
        name=name,
        ok=not problems,
        detail=f"{len(problems)} files: {_some(problems)}" if problems else ok,
    )


def _layout_check(members: Sequence[str]) -> CheckResult:
    tops = {m.split("/", 1)[0] for m in members}
    missing = [t for t in REQUIRED_TOP if t not in tops]
    unexpected = sorted(tops - set(ALLOWED_TOP))
    if missing or unexpected:
        return CheckResult(
            name="archive:layout",
            ok=False,
            detail=f"missing: {', '.join(missing) or 'none'}; "
            f"unexpected top-level entries: {', '.join(unexpected) or 'none'}",
        )
    return CheckResult(
        name="archive:layout", ok=True, detail=f"{len(members)} members under {sorted(tops)}"
    )


def _rpath_problems(elf: ElfInfo, executable: str) -> list[str]:
    """Only the executable may carry a search path, and only `$ORIGIN/../lib`: anything else
    either points at the build host or lets a stray library shadow the runtime's own."""
    problems: list[str] = []
    for kind, paths in (("RPATH", elf.rpath), ("RUNPATH", elf.runpath)):
        for path in paths:
            if elf.name == executable and path == EXECUTABLE_RPATH:
                continue
            why = "absolute" if path.startswith("/") else "not allowed"
            problems.append(f"{elf.name}: {kind} {path} ({why})")
    if elf.name == executable and EXECUTABLE_RPATH not in (*elf.rpath, *elf.runpath):
        problems.append(f"{elf.name}: no {EXECUTABLE_RPATH} search path")
    return problems


def _some(names: Sequence[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# --- containers --------------------------------------------------------------------------


def _run_stage(
    client: DockerClient,
    *,
    stage: Stage,
    image: str,
    archive: Path,
    arch: Arch,
    major_minor: str,
    modules: Sequence[str],
    cell_id: str,
    copy: bool,
    log: TextIO,
    build_prefix: str | None = None,
    timeout_seconds: float = STAGE_TIMEOUT_SECONDS,
    memory_bytes: int = STAGE_MEMORY_BYTES,
) -> ScriptOutput:
    """Run one stage of verify-runtime.sh in a fresh container of `image`, bounded by
    `timeout_seconds` and `memory_bytes` (no swap beyond it); the container is removed
    whatever happens. A stage that ran over its time, was OOM-killed anywhere (even a child
    process the script outlived), or stopped before its end fails as `script:<stage>`."""
    # A path the runtime has never seen, different for every run and stage (on /tmp: the
    # only place the unprivileged verify user may write).
    prefix = f"/tmp/rt-{secrets.token_hex(8)}"
    command = ["bash", f"/farm/recipe/{VERIFY_SCRIPT}", stage, prefix, major_minor, *modules]
    log.write(f"# stage {stage} in image {image} at {prefix}\n")
    started = time.monotonic()
    container: Container | None = None
    timed_out = out_of_memory = False
    try:
        container = client.containers.create(
            image,
            command=command,
            name=f"python-farm-verify-{stage}-{secrets.token_hex(4)}",
            # The build's labels, so the farm's clean-up on Ctrl-C finds these containers too.
            labels={CELL_LABEL: cell_id, ROLE_LABEL: "verify", OWNER_LABEL: owner()},
            # An explicit allow-list: nothing from the host leaks in.
            # configure's prefix, so the script can tell what must not be named any more.
            environment={
                "HOME": "/tmp",
                **({"FARM_BUILD_PREFIX": build_prefix} if build_prefix else {}),
            },
            volumes=None
            if copy
            else {
                str(archive.resolve()): {"bind": ARCHIVE_IN_CONTAINER, "mode": "ro"},
                str(RECIPE_DIR): {"bind": "/farm/recipe", "mode": "ro"},
            },
            **confinement(
                sandbox_user(),
                tmpfs_bytes=min(STAGE_TMPFS_BYTES, memory_bytes),
                memory_bytes=memory_bytes,
            ),
            platform=arch.docker_platform,
            detach=True,
        )
        if copy:
            _copy_in(container, archive)
        container.start()
        try:
            status = container.wait(timeout=timeout_seconds)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            timed_out = True
            status = {"StatusCode": -1}
        code = int(status.get("StatusCode", -1))
        if not timed_out:
            out_of_memory = oom_killed(container)
        stdout = container.logs(stdout=True, stderr=False).decode("utf-8", errors="replace")
        stderr = container.logs(stdout=False, stderr=True).decode("utf-8", errors="replace")
    except docker.errors.ImageNotFound:
        raise DockerError(
            f"image {image} for the {stage} verification is not present",
            hint="build it first: images.ensure_image(...) with the stack's run/builder plan",
        ) from None
    except docker.errors.APIError as exc:
        raise DockerError(
            f"the engine refused the {stage} verification container: {exc.explanation or exc}"
        ) from None
    finally:
        if container is not None:
            remove_container(container)
    log.write(stdout)
    if stderr:
        log.write("# stderr\n" + stderr)
    log.write(f"# stage {stage}: exit {code} after {time.monotonic() - started:.1f} s\n")
    output = parse_script_output(stdout)
    stopped = code != 0 or not output.done
    if stopped or out_of_memory:
        tail = " | ".join(line.strip() for line in stderr.splitlines()[-3:] if line.strip())
        memory = f"ran out of memory ({_size(memory_bytes)} limit)"
        if timed_out:
            why = f"stopped early (timed out after {timeout_seconds / 60:g} min (killed))"
        elif out_of_memory and stopped:
            why = f"stopped early ({memory})"
        elif out_of_memory:
            # The kernel killed a process of the stage and the script went on: what that
            # process was checking did not run to its end.
            why = f"{memory}: the kernel killed a process of it"
        else:
            why = f"stopped early (exit {code})"
        output.checks.append(
            CheckResult(
                name=f"script:{stage}", ok=False, detail=f"{VERIFY_SCRIPT} {stage} {why}: {tail}"
            )
        )
    return output


def _size(count: int) -> str:
    return f"{count / 1024**3:g} GiB" if count >= 1024**3 else f"{count / 1024**2:g} MiB"


def _copy_in(container: Container, archive: Path) -> None:
    """For an engine on another machine (no shared filesystem): one tar with the archive and
    the recipe, put into the created container before it starts."""
    with tempfile.TemporaryFile() as bundle:
        with tarfile.open(fileobj=bundle, mode="w") as tar:
            tar.add(archive, arcname=ARCHIVE_IN_CONTAINER.lstrip("/"))
            tar.add(RECIPE_DIR, arcname="farm/recipe", filter=_no_pycache)
        bundle.seek(0)
        if not container.put_archive("/", bundle):
            raise DockerError(f"the engine did not accept the inputs for {container.name}")


def _no_pycache(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if "__pycache__" in info.name.split("/") else info


def installed_versions(
    client: DockerClient, *, image: str, packages: Sequence[str], arch: Arch, cell_id: str
) -> dict[str, str]:
    """package -> version installed in `image` (dpkg-query), for the SBOM. Packages the image
    does not have are left out."""
    if not packages:
        return {}
    container: Container | None = None
    try:
        container = client.containers.create(
            image,
            command=["dpkg-query", "-W", "-f=${Package}\t${Version}\n", *packages],
            name=f"python-farm-verify-packages-{secrets.token_hex(4)}",
            labels={CELL_LABEL: cell_id, ROLE_LABEL: "verify", OWNER_LABEL: owner()},
            environment={},
            **confinement(sandbox_user()),
            platform=arch.docker_platform,
            detach=True,
        )
        container.start()
        container.wait()  # exit 1 only says some package is not installed
        stdout = container.logs(stdout=True, stderr=False).decode("utf-8", errors="replace")
    except docker.errors.APIError as exc:
        raise DockerError(
            f"the engine refused the package query container: {exc.explanation or exc}"
        ) from None
    finally:
        if container is not None:
            remove_container(container)
    versions: dict[str, str] = {}
    for line in stdout.splitlines():
        name, _, version = line.partition("\t")
        if name and version.strip():
            versions[name.split(":", 1)[0]] = version.strip()
    return versions


def leftover_verify_containers(
    client: DockerClient, *, owner_pid: int | None = None
) -> list[Container]:
    """Verification containers still known to the engine (for tests and clean-up)."""
    labels = [f"{ROLE_LABEL}=verify"]
    if owner_pid is not None:
        labels.append(f"{OWNER_LABEL}={owner(owner_pid)}")
    return list(client.containers.list(all=True, filters={"label": labels}))


# --- the whole verification ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HostAudit:
    """The checks made on the host, without Docker, before any container sees the archive."""

    checks: list[CheckResult]
    scan: ArchiveScan
    warnings: list[str]


def audit_archive(
    archive: Path, metadata: dict[str, Any], *, limits: Limits = RUNTIME_LIMITS
) -> HostAudit:
    """Checksum and ELF audit of `archive`, read through the safe reader: UnsafeArchiveError
    when it holds absolute or `..` names, links or devices escaping the tree, or exceeds a
    limit; so the containers (GNU tar) only ever unpack an archive already proven safe."""
    checks = [_checksum_check(archive, metadata.get("sha256"))]
    install_prefix = configured_prefix(metadata)
    markers = BUILD_PATH_MARKERS + ((install_prefix.encode(),) if install_prefix else ())
    scan = scan_archive(archive, build_path_markers=markers, limits=limits)
    major_minor = runtime_ldversion(metadata)
    checks.extend(
        audit_checks(
            scan,
            major_minor=major_minor,
            arch=Arch(metadata["arch"]),
            install_prefix=install_prefix,
            cpu_level=record_cpu_level(metadata),
        )
    )
    # Build-path hits are failures now (relocate:build-dir/-prefix), not warnings.
    return HostAudit(checks=checks, scan=scan, warnings=[])


def verify_archive(
    client: DockerClient,
    *,
    archive: Path,
    metadata: dict[str, Any],
    run_image: str,
    builder_image: str,
    expected_modules: Sequence[str],
    log_path: Path,
    transfer: Transfer = "auto",
    stack_packages: Sequence[str] = (),
    audit: HostAudit | None = None,
    consumer_image: str | None = None,
    allowed_skips: Sequence[str] = (),
    cpu_flags: CpuFlagsReader | None = None,
) -> VerificationReport:
    """Run every check on `archive`; never raises for a failed check (see raise_for_failures).

    `metadata` is the archive's record (metadata.build_record): its major/minor and arch say
    what to expect and its sha256 must match the archive; its variant and profile say which
    checks are required (verify/required.py). `allowed_skips` names required checks that may
    be skipped (already checked by required.check_allowed_skips); the report records them.
    `audit` is audit_archive's result when the caller ran it already. Raises DockerError
    when the engine cannot run the containers, VerificationError when the archive cannot be
    read at all and UnsafeArchiveError (before any container starts) when it holds what
    `tar -x` must not unpack.

    A runtime built for an x86-64 level runs its containers only where the engine's CPU has
    the level (`cpu_flags` reads its features; default: /proc/cpuinfo of the engine's
    machine); elsewhere they are skipped with the reason, and `cpu:level` fails unless it is
    in `allowed_skips`.
    """
    started = time.monotonic()
    arch = Arch(metadata["arch"])
    major_minor = runtime_ldversion(metadata)
    required = required_checks_of(metadata)
    cell_id = str(metadata.get("cell") or archive.name)
    # Bind mounts need the engine on this machine; a remote one (ssh://...) gets copies.
    copy = transfer == "copy" or (transfer == "auto" and not is_local_engine(client))
    host = audit if audit is not None else audit_archive(archive, metadata)
    install_prefix = configured_prefix(metadata)
    scan = host.scan
    checks = list(host.checks)
    warnings = list(host.warnings)
    packages: set[str] = set()

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"# verify {archive} ({cell_id})\n")
        for check in checks:
            log.write(_format_check(check))
        stages: list[tuple[Stage, str, list[str]]] = [
            ("runtime", run_image, list(expected_modules)),
            ("extension", builder_image, []),
        ]
        if consumer_image is not None:
            stages.append(("consumers", consumer_image, []))
        if jit_built(metadata):
            # The JIT is off by default: the runtime stage proved that runtime; this one
            # proves it is off, then turns it on (PYTHON_JIT=1) and runs the checks again.
            stages.append(("jit", run_image, list(expected_modules)))
        level = record_cpu_level(metadata)
        if level is not None:
            flags = (
                cpu_flags()
                if cpu_flags is not None
                else engine_cpu_flags(client, image=run_image, arch=arch, cell_id=cell_id)
            )
            level_checks = cpu_level_checks(
                level, flags, [stage for stage, _, _ in stages], allowed_skips=allowed_skips
            )
            if lacks(level, flags) is not None:
                # The container stages cannot run here. cpu:level (required, and skipped)
                # stands for the required checks they report: it fails, or is allowed, for all.
                stages = []
                reported = {c.name for c in (*checks, *level_checks)}
                required = tuple(n for n in required if n in reported)
            for check in level_checks:
                log.write(_format_check(check))
            checks.extend(level_checks)
        for stage, image, modules in stages:
            output = _run_stage(
                client,
                stage=stage,
                image=image,
                archive=archive,
                arch=arch,
                major_minor=major_minor,
                modules=modules,
                cell_id=cell_id,
                copy=copy,
                log=log,
                build_prefix=install_prefix,
            )
            checks.extend(output.checks)
            warnings.extend(output.warnings)
            packages.update(output.packages)
        package_versions = installed_versions(
            client,
            image=run_image,
            packages=sorted(packages | set(stack_packages)),
            arch=arch,
            cell_id=cell_id,
        )
        seconds = time.monotonic() - started
        report = VerificationReport(
            checks=checks,
            runtime_packages=sorted(packages),
            package_versions=package_versions,
            warnings=warnings,
            needed={e.name: list(e.needed) for e in scan.elves},
            hardening=hardening_summary(scan.elves, major_minor=major_minor),
            seconds=seconds,
            log_path=log_path,
            required=required,
            allowed_skips=tuple(sorted(set(allowed_skips))),
        )
        log.write(
            f"# {sum(c.ok for c in checks)}/{len(checks)} checks passed, "
            f"{len(report.skips)} skipped, in {seconds:.1f} s\n"
        )
        log.write(f"# required: {' '.join(required)}\n")
        for failure in report.failures:
            if failure.name in required:
                log.write(f"# required {failure.name}: {failure.detail}\n")
        for warning in warnings:
            log.write(f"# warning: {warning}\n")
    return report


def cpu_level_checks(
    level: CpuLevel,
    flags: frozenset[str],
    stages: Sequence[str],
    *,
    allowed_skips: Collection[str] = (),
) -> list[CheckResult]:
    """`cpu:level` for a runtime built for `level` on a machine with `flags`; where the
    machine lacks the level, also one skipped `stage:<name>` per container stage that
    cannot run there. A check that did not run did not pass: `cpu:level` fails then, unless
    the caller allows that skip."""
    why = lacks(level, flags)
    if why is None:
        return [CheckResult(name=CPU_LEVEL_CHECK, ok=True, detail=has_level(level))]
    allowed = CPU_LEVEL_CHECK in allowed_skips
    # The verdict first: a long list of missing features is cut short in the error line.
    verdict = (
        "allowed by the caller"
        if allowed
        else f"not verified (verify on a machine with {level.march}, or --allow-skip "
        f"{CPU_LEVEL_CHECK})"
    )
    cannot = ", ".join(stages)
    return [
        skipped(CPU_LEVEL_CHECK, f"{verdict}: {why}; the {cannot} checks cannot run here"),
        *(skipped(f"stage:{stage}", why) for stage in stages),
    ]


def record_cpu_level(metadata: dict[str, Any]) -> CpuLevel | None:
    """The x86-64 level the record says the runtime was built for; None for a baseline one
    (or a record from before CPU levels)."""
    value = metadata.get("cpu_level")
    if value is None:
        return None
    try:
        return CpuLevel(value)
    except ValueError:
        raise VerificationError(
            f"{metadata.get('name', 'the record')}: unknown cpu_level {value!r}"
        ) from None


def jit_built(metadata: dict[str, Any]) -> bool:
    """Whether the record says the runtime was built with the JIT available."""
    return metadata.get("jit") is True


def runtime_ldversion(metadata: dict[str, Any]) -> str:
    """What the runtime's names carry after `python`: 3.13 (bin/python3.13, lib/python3.13/,
    libpython3.13.so) or, for the free-threaded variant, 3.13t. A record from before variants
    has no `variant`: the default. Every `major_minor` below means this."""
    try:
        variant = VariantName(metadata.get("variant", VariantName.DEFAULT.value))
    except ValueError:
        raise VerificationError(
            f"{metadata.get('name', 'the record')}: unknown variant {metadata.get('variant')!r}"
        ) from None
    return f"{metadata['major']}.{metadata['minor']}{variant.abi_suffix}"


def configured_prefix(metadata: dict[str, Any]) -> str | None:
    """configure's --prefix from the record's configure_args, None for an older record."""
    args = metadata.get("configure_args")
    if not isinstance(args, list):
        return None
    prefixes = [a.removeprefix("--prefix=") for a in args if str(a).startswith("--prefix=")]
    return prefixes[-1] if prefixes and prefixes[-1].startswith("/") else None


def metadata_path_for(archive: Path) -> Path:
    """The record written beside an archive: python-X-....tar.zst -> python-X-....json."""
    return archive.with_name(archive.name.removesuffix(".tar.zst") + ".json")


def load_metadata(archive: Path) -> dict[str, Any]:
    """The archive's metadata record, for verifying an archive built earlier: read and
    validated by orchestrator/verify/record.py."""
    from orchestrator.verify.record import read_record

    return read_record(metadata_path_for(archive), archive_name=archive.name)


def _checksum_check(archive: Path, expected: object) -> CheckResult:
    if not isinstance(expected, str):
        return CheckResult(name="archive:sha256", ok=False, detail="metadata has no sha256")
    try:
        actual = sha256_of(archive)
    except PackagingError as exc:
        raise VerificationError(str(exc)) from None
    if actual != expected:
        return CheckResult(
            name="archive:sha256",
            ok=False,
            detail=f"archive is {actual}, metadata says {expected}",
        )
    return CheckResult(name="archive:sha256", ok=True, detail=actual)


def _status(check: CheckResult) -> str:
    return "ok" if check.ok else "skip" if check.skipped else "fail"


def _format_check(check: CheckResult) -> str:
    return f"CHECK {check.name} {_status(check)} {check.detail}\n"


def summary_lines(report: VerificationReport) -> Iterable[str]:
    """Human-readable lines for the CLI: one per check, then warnings and packages."""
    failed = {check.name for check in report.failures}
    for check in report.checks:
        if check.skipped:
            why = (
                "required, allowed by --allow-skip"
                if check.name in report.allowed_skips
                else "REQUIRED"
                if check.name in failed
                else "optional"
            )
            yield f"skip {check.name}: {check.detail} [{why}]"
        else:
            yield f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}"
    reported = {check.name for check in report.checks}
    for name in report.required:
        if name not in reported:
            yield f"FAIL {name}: required, but never reported"
    for warning in report.warnings:
        yield f"warning: {warning}"
    yield f"runtime packages: {' '.join(report.runtime_packages) or '(none)'}"
