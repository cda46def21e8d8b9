"""The host-side ELF audit on real ELF files compiled here with gcc, packed like a runtime."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.archive import pack_tree
from orchestrator.errors import VerificationError
from orchestrator.matrix import Arch
from orchestrator.verify.elfaudit import BUILD_PATH_MARKERS, scan_archive
from orchestrator.verify.runtime import CheckResult, audit_checks

HOST_ARCH = {"x86_64": Arch.AMD64, "aarch64": Arch.ARM64}.get(platform.machine())


@pytest.fixture(scope="module")
def gcc() -> str:
    path = shutil.which("gcc")
    if path is None:
        pytest.fail("gcc is needed to make test ELF files (scripts/setup-host.sh installs it)")
    return path


# What the farm's build flags do (matrix.yaml build_flags); a test adds one flag after these
# to undo one property, and gcc/ld let the last flag win.
HARDENED = ("-O2", "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong", "-Wl,-z,relro,-z,now")
TINY = "int farm_answer(void) { return 42; }\n"
# Enough for the compiler to guard: a stack array, and calls whose buffer size it knows.
CORE = """#include <stdio.h>
#include <string.h>
int farm_run(const char *arg) {
    char buf[64];
    strcpy(buf, arg);
    char out[32];
    return snprintf(out, sizeof out, "%s!", buf);
}
"""
MAIN = """int farm_run(const char *arg);
int main(int argc, char **argv) { return farm_run(argv[0]) - argc; }
"""
# Address-sized data in .text with a relocation against a symbol: the loader must patch text.
TEXTREL = TINY + '__asm__(".text\\n.dc.a farm_answer\\n");\n'
# A section asking to be writable and executable: ld puts it in a RWX PT_LOAD.
WX_LOAD = TINY + '__asm__(".section .farm_wx,\\"awx\\",%progbits\\n.byte 0\\n.previous\\n");\n'


def _compile(gcc: str, out: Path, *flags: str, shared: bool = True, body: str = TINY) -> None:
    source = out.parent / f"{out.name}.c"
    source.write_text(body)
    kind = ["-shared", "-fPIC"] if shared else []
    command = [gcc, *kind, *HARDENED, "-o", str(out), str(source), *flags]
    subprocess.run(command, check=True, capture_output=True)
    source.unlink()


def _runtime_tree(
    root: Path,
    gcc: str,
    *,
    dynload_flags: tuple[str, ...],
    dynload_body: str = TINY,
    libpython_flags: tuple[str, ...] = (),
) -> Path:
    """A minimal runtime layout: bin/python3.13 with $ORIGIN/../lib around a shared
    lib/libpython3.13.so.1.0, one lib-dynload module."""
    (root / "bin").mkdir(parents=True)
    (root / "include" / "python3.13").mkdir(parents=True)
    dynload = root / "lib" / "python3.13" / "lib-dynload"
    dynload.mkdir(parents=True)
    libpython = root / "lib" / "libpython3.13.so.1.0"
    _compile(gcc, libpython, "-s", *libpython_flags, body=CORE)
    _compile(
        gcc,
        root / "bin" / "python3.13",
        "-s",
        "-Wl,-rpath,$ORIGIN/../lib",
        str(libpython),
        shared=False,
        body=MAIN,
    )
    (root / "bin" / "python3").symlink_to("python3.13")
    _compile(gcc, dynload / "_farm.so", *dynload_flags, body=dynload_body)
    (root / "include" / "python3.13" / "pyconfig.h").write_text("#define FARM 1\n")
    return root


def _audit(tree: Path, tmp_path: Path) -> tuple[dict[str, CheckResult], list[tuple[str, str]]]:
    archive = pack_tree(tree, tmp_path / "rt.tar.zst", source_date_epoch=0, level=3).path
    scan = scan_archive(archive)
    checks = audit_checks(scan, major_minor="3.13", arch=HOST_ARCH)
    return {c.name: c for c in checks}, list(scan.build_path_hits)


def test_stripped_runtime_passes(gcc: str, tmp_path: Path) -> None:
    tree = _runtime_tree(tmp_path / "tree", gcc, dynload_flags=("-Wl,--strip-all",))
    checks, hits = _audit(tree, tmp_path)
    assert all(c.ok for c in checks.values()), checks
    assert checks["elf:read"].detail == "3 ELF files"
    assert hits == []
    # The facts behind the compiler checks come from libpython, not the bare executable.
    assert checks["elf:stack-protector"].detail.startswith(
        "lib/libpython3.13.so.1.0 references __stack_chk_fail"
    )
    assert "__strcpy_chk" in checks["elf:fortify"].detail
    assert checks["elf:relro"].detail == "3 files: PT_GNU_RELRO"


def test_absolute_rpath_fails_naming_file_and_path(gcc: str, tmp_path: Path) -> None:
    tree = _runtime_tree(
        tmp_path / "tree", gcc, dynload_flags=("-s", "-Wl,-rpath,/opt/build-host/lib")
    )
    checks, _ = _audit(tree, tmp_path)
    rpath = checks["elf:rpath"]
    assert not rpath.ok
    assert "lib/python3.13/lib-dynload/_farm.so" in rpath.detail
    assert "/opt/build-host/lib (absolute)" in rpath.detail
    assert checks["elf:stripped"].ok


def test_unstripped_library_fails_naming_it(gcc: str, tmp_path: Path) -> None:
    tree = _runtime_tree(tmp_path / "tree", gcc, dynload_flags=())
    checks, _ = _audit(tree, tmp_path)
    stripped = checks["elf:stripped"]
    assert not stripped.ok
    assert stripped.detail == "1 files have a .symtab: lib/python3.13/lib-dynload/_farm.so"
    # An unstripped module's .symtab is read too, and changes nothing here.
    assert all(c.ok for name, c in checks.items() if name != "elf:stripped"), checks
    assert checks["elf:rpath"].ok


def test_static_library_and_build_paths(gcc: str, tmp_path: Path) -> None:
    tree = _runtime_tree(tmp_path / "tree", gcc, dynload_flags=("-s",))
    (tree / "lib" / "libpython3.13.a").write_bytes(b"!<arch>\n")
    config = tree / "lib" / "python3.13" / "config-3.13" / "Makefile"
    config.parent.mkdir()
    config.write_text("abs_srcdir=\t/tmp/cpython.Ab12Cd\n")
    sysconfigdata = tree / "lib" / "python3.13" / "_sysconfigdata.py"
    sysconfigdata.write_text("build_time_vars = {'abs_builddir': '/tmp/python-build'}\n")
    (tree / "lib" / "python3.13" / "os.py").write_text("import sys\n")
    checks, hits = _audit(tree, tmp_path)
    assert not checks["archive:static-libs"].ok
    assert "lib/libpython3.13.a" in checks["archive:static-libs"].detail
    assert hits == [
        ("lib/python3.13/_sysconfigdata.py", "/tmp/python-build"),
        ("lib/python3.13/config-3.13/Makefile", "/tmp/cpython."),
    ]
    # Once a warning, now a failure naming both files.
    build_dir = checks["relocate:build-dir"]
    assert not build_dir.ok
    assert "lib/python3.13/_sysconfigdata.py (/tmp/python-build)" in build_dir.detail
    assert "lib/python3.13/config-3.13/Makefile (/tmp/cpython.)" in build_dir.detail


def test_text_naming_the_build_prefix_fails(gcc: str, tmp_path: Path) -> None:
    """A .pc file left with configure's prefix: found in the archive, named by the check."""
    tree = _runtime_tree(tmp_path / "tree", gcc, dynload_flags=("-s",))
    pkgconfig = tree / "lib" / "pkgconfig"
    pkgconfig.mkdir()
    (pkgconfig / "python-3.13.pc").write_text("prefix=/opt/python-farm\n")
    (pkgconfig / "python3.pc").write_text("prefix=${pcfiledir}/../..\n")
    archive = pack_tree(tree, tmp_path / "rt.tar.zst", source_date_epoch=0, level=3).path
    scan = scan_archive(archive, build_path_markers=(*BUILD_PATH_MARKERS, b"/opt/python-farm"))
    checks = {
        c.name: c
        for c in audit_checks(
            scan, major_minor="3.13", arch=HOST_ARCH, install_prefix="/opt/python-farm"
        )
    }
    prefix = checks["relocate:build-prefix"]
    assert not prefix.ok
    assert prefix.detail == (
        "text files name the build prefix /opt/python-farm: lib/pkgconfig/python-3.13.pc"
    )
    assert checks["relocate:build-dir"].ok


def test_needed_entries_are_read(gcc: str, tmp_path: Path) -> None:
    tree = _runtime_tree(tmp_path / "tree", gcc, dynload_flags=("-s",))
    archive = pack_tree(tree, tmp_path / "rt.tar.zst", source_date_epoch=0, level=3).path
    elves = {e.name: e for e in scan_archive(archive).elves}
    assert "libc.so.6" in elves["bin/python3.13"].needed
    assert elves["bin/python3.13"].rpath + elves["bin/python3.13"].runpath == ("$ORIGIN/../lib",)
    assert not elves["bin/python3.13"].has_symtab


def test_unreadable_archive_is_a_verification_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar.zst"
    bogus.write_bytes(b"not zstd at all")
    with pytest.raises(VerificationError, match="cannot read the archive"):
        scan_archive(bogus)


DYNLOAD = "lib/python3.13/lib-dynload/_farm.so"
LIBPYTHON = "lib/libpython3.13.so.1.0"


@pytest.mark.parametrize(
    ("where", "flags", "body", "check", "detail"),
    [
        pytest.param(
            "dynload",
            ("-Wl,-z,execstack",),
            TINY,
            "elf:nx-stack",
            f"1 files: {DYNLOAD}: executable stack (PF_X on PT_GNU_STACK)",
            id="execstack",
        ),
        pytest.param(
            "dynload",
            (),
            WX_LOAD,
            "elf:wx-load",
            f"1 files: {DYNLOAD}: writable and executable PT_LOAD",
            id="wx-load",
        ),
        pytest.param(
            "dynload",
            ("-Wl,-z,norelro",),
            TINY,
            "elf:relro",
            f"1 files: {DYNLOAD}: no PT_GNU_RELRO",
            id="norelro",
        ),
        pytest.param(
            "dynload",
            ("-Wl,-z,lazy",),
            TINY,
            "elf:bind-now",
            f"1 files: {DYNLOAD}: lazy binding (no DT_BIND_NOW, DF_BIND_NOW or DF_1_NOW)",
            id="lazy",
        ),
        pytest.param(
            "dynload",
            ("-Wl,-z,notext",),
            TEXTREL,
            "elf:textrel",
            f"1 files: {DYNLOAD}: text relocations (DT_TEXTREL)",
            id="textrel",
        ),
        pytest.param(
            "libpython",
            ("-fno-stack-protector",),
            CORE,
            "elf:stack-protector",
            f"{LIBPYTHON}: no __stack_chk_fail (built without -fstack-protector-strong?)",
            id="no-stack-protector",
        ),
        pytest.param(
            "libpython",
            ("-U_FORTIFY_SOURCE",),
            CORE,
            "elf:fortify",
            f"{LIBPYTHON}: no __*_chk import (built without -D_FORTIFY_SOURCE=2 -O2?)",
            id="no-fortify",
        ),
    ],
)
def test_one_missing_hardening_property_fails_naming_file_and_property(
    gcc: str,
    tmp_path: Path,
    where: str,
    flags: tuple[str, ...],
    body: str,
    check: str,
    detail: str,
) -> None:
    if where == "dynload":
        tree = _runtime_tree(
            tmp_path / "tree", gcc, dynload_flags=("-s", *flags), dynload_body=body
        )
    else:
        tree = _runtime_tree(tmp_path / "tree", gcc, dynload_flags=("-s",), libpython_flags=flags)
    checks, _ = _audit(tree, tmp_path)
    assert checks[check].detail.startswith(detail), checks[check]
    assert {name for name, c in checks.items() if not c.ok} == {check}


def test_object_files_are_not_judged(gcc: str, tmp_path: Path) -> None:
    """CPython installs config-X.Y/python.o: no program headers, nothing to load."""
    tree = _runtime_tree(tmp_path / "tree", gcc, dynload_flags=("-s",))
    config = tree / "lib" / "python3.13" / "config-3.13"
    config.mkdir()
    _compile(gcc, config / "python.o", "-c", shared=False, body=TINY)
    checks, _ = _audit(tree, tmp_path)
    assert checks["elf:read"].detail == "4 ELF files"
    # An object file keeps its .symtab (the linker needs it); the hardening checks skip it.
    assert {name for name, c in checks.items() if not c.ok} == {"elf:stripped"}
    assert checks["elf:relro"].detail == "3 files: PT_GNU_RELRO"
