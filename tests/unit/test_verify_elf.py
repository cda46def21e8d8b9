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


def _compile(gcc: str, out: Path, *flags: str, shared: bool = True) -> None:
    source = out.parent / f"{out.name}.c"
    body = "int farm_answer(void) { return 42; }\n"
    if not shared:
        body += "int main(void) { return farm_answer() - 42; }\n"
    source.write_text(body)
    kind = ["-shared", "-fPIC"] if shared else []
    subprocess.run([gcc, *kind, "-o", str(out), str(source), *flags], check=True)
    source.unlink()


def _runtime_tree(root: Path, gcc: str, *, dynload_flags: tuple[str, ...]) -> Path:
    """A minimal runtime layout: bin/python3.13 with $ORIGIN/../lib, one lib-dynload module."""
    (root / "bin").mkdir(parents=True)
    (root / "include" / "python3.13").mkdir(parents=True)
    dynload = root / "lib" / "python3.13" / "lib-dynload"
    dynload.mkdir(parents=True)
    _compile(gcc, root / "bin" / "python3.13", "-s", "-Wl,-rpath,$ORIGIN/../lib", shared=False)
    (root / "bin" / "python3").symlink_to("python3.13")
    _compile(gcc, dynload / "_farm.so", *dynload_flags)
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
    assert checks["elf:read"].detail == "2 ELF files"
    assert hits == []


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
