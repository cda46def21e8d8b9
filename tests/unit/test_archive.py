"""orchestrator.archive on small trees under tmp_path: determinism, layout, checks, atomicity."""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from orchestrator import archive
from orchestrator.archive import ArchiveInfo, pack_tree, sha256_of, write_sha256_file
from orchestrator.errors import PackagingError

EPOCH = 1_700_000_000  # 2023-11-14; every file made by the tests is newer


def make_tree(root: Path) -> Path:
    """A miniature CPython prefix: modes, a symlink, a hardlink, nesting, an empty dir."""
    files: dict[str, tuple[bytes, int]] = {
        "bin/python3": (b"\x7fELF pretend interpreter\n", 0o755),
        "bin/pip3": (b"#!/bin/sh\nexec python3 -m pip\n", 0o700),
        "include/python3.13/Python.h": (b"#define Py_PYTHON_H\n", 0o644),
        "lib/libpython3.13.so.1.0": (b"\x7fELF pretend library\n" * 50, 0o755),
        "lib/python3.13/os.py": (b"import abc\n" * 100, 0o644),
        "lib/python3.13/encodings/__init__.py": (b"# codecs\n", 0o600),
        "lib/python3.13/a-b.py": (b"# sorts after the a/ directory's contents\n", 0o644),
        "lib/python3.13/a/x.py": (b"x = 1\n", 0o644),
        "share/man/man1/python3.13.1": (b".TH PYTHON 1\n", 0o444),
    }
    for rel, (data, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
    (root / "lib/python3.13/site-packages").mkdir()
    (root / "bin/python").symlink_to("python3")
    (root / "lib/libpython3.13.so").symlink_to("libpython3.13.so.1.0")
    (root / "share/man/man1/python3.1").symlink_to("python3.13.1")
    os.link(root / "bin/python3", root / "bin/python3.13")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "prefix")


def pack(tree: Path, dest: Path, **kwargs: Any) -> ArchiveInfo:
    """pack_tree at a fast level: level 22 spends ~0.4 s per call just setting up its tables.
    Tests about the real settings call pack_tree directly."""
    kwargs.setdefault("source_date_epoch", EPOCH)
    kwargs.setdefault("level", 3)
    return pack_tree(tree, dest, **kwargs)


def read_members(path: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    out: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with (
        path.open("rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as plain,
        tarfile.open(fileobj=plain, mode="r|") as tar,
    ):
        for member in tar:
            data = None
            if member.isreg():
                f = tar.extractfile(member)
                assert f is not None
                data = f.read()
            out.append((member, data))
    return out


def component_key(name: str) -> list[bytes]:
    return [os.fsencode(part) for part in name.split("/")]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- determinism ---------------------------------------------------------------------------


def test_same_tree_packed_twice_is_byte_identical(tree: Path, tmp_path: Path) -> None:
    a = pack_tree(tree, tmp_path / "out/a.tar.zst", source_date_epoch=EPOCH)
    b = pack_tree(tree, tmp_path / "out/b.tar.zst", source_date_epoch=EPOCH)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.sha256 == b.sha256


def test_same_content_elsewhere_is_byte_identical(tree: Path, tmp_path: Path) -> None:
    # Different location, inode numbers and creation times; same content.
    time.sleep(0.01)
    other = make_tree(tmp_path / "somewhere/else/prefix")
    a = pack(tree, tmp_path / "a.tar.zst")
    b = pack(other, tmp_path / "b.tar.zst")
    assert a.path.read_bytes() == b.path.read_bytes()


def test_mtime_and_permission_noise_is_ignored(tree: Path, tmp_path: Path) -> None:
    before = pack(tree, tmp_path / "before.tar.zst")
    later = time.time() + 3600
    os.utime(tree / "lib/python3.13/os.py", (later, later))
    os.utime(tree / "lib", (later, later))
    (tree / "lib/python3.13/os.py").chmod(0o600)
    (tree / "lib/python3.13/encodings/__init__.py").chmod(0o640)
    (tree / "bin/pip3").chmod(0o755)
    (tree / "include").chmod(0o700)
    after = pack(tree, tmp_path / "after.tar.zst")
    assert before.path.read_bytes() == after.path.read_bytes()


def test_content_change_changes_bytes(tree: Path, tmp_path: Path) -> None:
    before = pack(tree, tmp_path / "before.tar.zst")
    (tree / "lib/python3.13/os.py").write_bytes(b"import abd\n" * 100)
    after = pack(tree, tmp_path / "after.tar.zst")
    assert before.sha256 != after.sha256


def test_executable_bit_change_changes_bytes(tree: Path, tmp_path: Path) -> None:
    before = pack(tree, tmp_path / "before.tar.zst")
    (tree / "lib/python3.13/os.py").chmod(0o744)
    after = pack(tree, tmp_path / "after.tar.zst")
    assert before.sha256 != after.sha256


def test_default_params_same_bytes_for_one_and_two_threads(tree: Path, tmp_path: Path) -> None:
    one = pack_tree(tree, tmp_path / "one.tar.zst", source_date_epoch=EPOCH, threads=1)
    two = pack_tree(tree, tmp_path / "two.tar.zst", source_date_epoch=EPOCH, threads=2)
    assert one.path.read_bytes() == two.path.read_bytes()


def test_multi_job_output_is_independent_of_thread_count(tmp_path: Path) -> None:
    # With long-distance matching, zstd's multi-threaded job size is 2**max(21, cycleLog + 3),
    # cycleLog being chainLog (minus 1 for the binary-tree strategies): 512 MiB at level 22,
    # 64 MiB at 19, but 2 MiB at level 3. Only at a low level do ~15 MB of input span several
    # jobs, so that the workers really split the work and their count could show in the output.
    rng = random.Random(1234)
    nibbles = bytes((b & 0x0F) + 0x41 for b in range(256))  # ~50% compressible
    root = tmp_path / "big"
    for i in range(5):
        path = root / f"lib/blob{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        chunk = rng.randbytes(1 << 20).translate(nibbles)
        path.write_bytes(chunk + rng.randbytes(1 << 20).translate(nibbles) + chunk)  # 3 MiB
    outputs = {
        threads: pack(root, tmp_path / f"t{threads}.tar.zst", threads=threads)  # level 3
        for threads in (1, 2, 4)
    }
    first = outputs[1].path.read_bytes()
    assert all(info.path.read_bytes() == first for info in outputs.values())


# --- layout --------------------------------------------------------------------------------


def test_members_are_flat_sorted_and_normalized(tree: Path, tmp_path: Path) -> None:
    old = EPOCH - 86400
    os.utime(tree / "include/python3.13/Python.h", (old, old))
    info = pack(tree, tmp_path / "x.tar.zst")
    members = read_members(info.path)
    names = [m.name for m, _ in members]
    assert names == [
        "./bin",
        "./bin/pip3",
        "./bin/python",
        "./bin/python3",
        "./bin/python3.13",
        "./include",
        "./include/python3.13",
        "./include/python3.13/Python.h",
        "./lib",
        "./lib/libpython3.13.so",
        "./lib/libpython3.13.so.1.0",
        "./lib/python3.13",
        "./lib/python3.13/a",
        "./lib/python3.13/a/x.py",
        "./lib/python3.13/a-b.py",
        "./lib/python3.13/encodings",
        "./lib/python3.13/encodings/__init__.py",
        "./lib/python3.13/os.py",
        "./lib/python3.13/site-packages",
        "./share",
        "./share/man",
        "./share/man/man1",
        "./share/man/man1/python3.1",
        "./share/man/man1/python3.13.1",
    ]
    assert names == sorted(names, key=component_key)
    assert info.members == len(members)
    by_name = {m.name: (m, data) for m, data in members}
    for m, _ in members:
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
        expected_mtime = old if m.name == "./include/python3.13/Python.h" else EPOCH
        assert m.mtime == expected_mtime, m.name
        if m.isdir():
            assert m.mode == 0o755, m.name
        elif m.issym():
            assert m.mode == 0o777, m.name
    modes = {name: by_name[name][0].mode for name in by_name if by_name[name][0].isreg()}
    assert modes == {
        "./bin/pip3": 0o755,
        "./bin/python3": 0o755,
        "./include/python3.13/Python.h": 0o644,
        "./lib/libpython3.13.so.1.0": 0o755,
        "./lib/python3.13/a/x.py": 0o644,
        "./lib/python3.13/a-b.py": 0o644,
        "./lib/python3.13/encodings/__init__.py": 0o644,
        "./lib/python3.13/os.py": 0o644,
        "./share/man/man1/python3.13.1": 0o644,
    }
    link, _ = by_name["./bin/python"]
    assert link.issym() and link.linkname == "python3"
    assert by_name["./share/man/man1/python3.1"][0].linkname == "python3.13.1"
    hard, _ = by_name["./bin/python3.13"]
    assert hard.islnk() and hard.linkname == "./bin/python3" and hard.mode == 0o755
    assert by_name["./bin/python3"][1] == b"\x7fELF pretend interpreter\n"
    assert by_name["./lib/python3.13/os.py"][1] == b"import abc\n" * 100


def test_gnu_format_without_pax_headers(tree: Path, tmp_path: Path) -> None:
    info = pack(tree, tmp_path / "x.tar.zst")
    plain = zstandard.ZstdDecompressor().stream_reader(info.path.open("rb")).read()
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as tar:
        members = tar.getmembers()
    assert all(not m.pax_headers for m in members)
    assert plain[257:265] == tarfile.GNU_MAGIC
    assert b"PaxHeader" not in plain


def test_long_names_survive(tmp_path: Path) -> None:
    root = tmp_path / "prefix"
    deep = root / ("d" * 120) / ("e" * 120)
    deep.mkdir(parents=True)
    (deep / ("f" * 150)).write_bytes(b"long\n")
    (root / "link").symlink_to(f"{'d' * 120}/{'e' * 120}/{'f' * 150}")
    members = read_members(pack(root, tmp_path / "x.tar.zst").path)
    names = [m.name for m, _ in members]
    assert f"./{'d' * 120}/{'e' * 120}/{'f' * 150}" in names
    assert members[-1][0].linkname == f"{'d' * 120}/{'e' * 120}/{'f' * 150}"


def test_names_are_sorted_bytewise(tmp_path: Path) -> None:
    root = tmp_path / "prefix"
    root.mkdir()
    # U+FF01 is ef bc 81 in UTF-8; an undecodable 0xff byte becomes U+DCFF. As str, the latter
    # sorts first; as bytes (what tar --sort=name does) it sorts last.
    names = ["B", "a", "\uff01", os.fsdecode(b"\xff"), "Z"]
    try:
        for name in names:
            (root / name).write_bytes(b"")
    except (OSError, UnicodeError):
        pytest.skip("filesystem rejects non-UTF-8 names")
    members = read_members(pack(root, tmp_path / "x.tar.zst").path)
    assert [m.name for m, _ in members] == ["./B", "./Z", "./a", "./\uff01", "./\udcff"]


def test_extracts_with_system_tar(tree: Path, tmp_path: Path) -> None:
    if shutil.which("zstd") is None or shutil.which("tar") is None:
        pytest.skip("needs the zstd and tar commands")
    info = pack_tree(tree, tmp_path / "x.tar.zst", source_date_epoch=EPOCH)  # real settings
    out = tmp_path / "extracted"
    out.mkdir(mode=0o700)
    subprocess.run(["tar", "--zstd", "-xf", str(info.path), "-C", str(out)], check=True)
    assert os.readlink(out / "bin/python") == "python3"
    assert (out / "bin/python").read_bytes() == b"\x7fELF pretend interpreter\n"
    assert stat.S_IMODE((out / "bin/python3").stat().st_mode) & 0o111
    assert (out / "bin/python3.13").stat().st_ino == (out / "bin/python3").stat().st_ino
    assert (out / "lib/python3.13/os.py").read_bytes() == b"import abc\n" * 100
    assert (out / "lib/python3.13/site-packages").is_dir()
    assert stat.S_IMODE(out.stat().st_mode) == 0o700  # no "." entry to re-mode DIR
    assert int((out / "lib/python3.13/os.py").stat().st_mtime) == EPOCH


def test_extracts_with_python_data_filter(tree: Path, tmp_path: Path) -> None:
    if not hasattr(tarfile, "data_filter"):
        pytest.skip("tarfile extraction filters need Python >= 3.11.4")
    info = pack(tree, tmp_path / "x.tar.zst")
    out = tmp_path / "extracted"
    with (
        info.path.open("rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as plain,
        tarfile.open(fileobj=plain, mode="r|") as tar,
    ):
        tar.extractall(out, filter="data")
    assert os.readlink(out / "bin/python") == "python3"
    assert (out / "bin/python3.13").read_bytes() == b"\x7fELF pretend interpreter\n"


# --- checksums -----------------------------------------------------------------------------


def test_info_and_sha256_file_match_the_archive(tree: Path, tmp_path: Path) -> None:
    info = pack(tree, tmp_path / "out/cpython.tar.zst")
    data = info.path.read_bytes()
    assert info.size == len(data) == info.path.stat().st_size
    assert info.sha256 == hashlib.sha256(data).hexdigest() == sha256_of(info.path)
    sums = write_sha256_file(info)
    assert sums == tmp_path / "out/cpython.tar.zst.sha256"
    text = sums.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}  cpython\.tar\.zst\n", text)
    assert text == f"{hashlib.sha256(data).hexdigest()}  cpython.tar.zst\n"
    assert leftovers(tmp_path / "out") == ["cpython.tar.zst", "cpython.tar.zst.sha256"]
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "--check", "--quiet", sums.name], cwd=sums.parent, check=True)


def test_archive_file_mode_and_dest_parent_created(tree: Path, tmp_path: Path) -> None:
    info = pack(tree, tmp_path / "a/b/c/x.tar.zst")
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o644


# --- rejected input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "target"),
    [
        ("bin/abs", "/usr/bin/python3"),
        ("lib/escape", "../../etc/passwd"),
        ("lib/python3.13/up2", "../../.."),
        # Leaves and re-enters the prefix by name: fine here, dangling once extracted elsewhere.
        ("bin/roundtrip", "../../prefix/bin/python3"),
    ],
)
def test_bad_symlinks_are_rejected(tree: Path, tmp_path: Path, rel: str, target: str) -> None:
    (tree / rel).symlink_to(target)
    dest = tmp_path / "out/x.tar.zst"
    with pytest.raises(PackagingError) as caught:
        pack(tree, dest)
    assert str(tree / rel) in str(caught.value)
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_symlink_escaping_through_another_symlink_is_rejected(tree: Path, tmp_path: Path) -> None:
    (tree / "lib/up").symlink_to("..")  # the prefix itself: allowed
    (tree / "lib/sneaky").symlink_to("up/..")  # textually lib/, really the prefix's parent
    with pytest.raises(PackagingError) as caught:
        pack(tree, tmp_path / "x.tar.zst")
    assert str(tree / "lib/sneaky") in str(caught.value)


def test_symlinks_inside_the_tree_are_fine(tree: Path, tmp_path: Path) -> None:
    (tree / "lib/up").symlink_to("..")
    (tree / "lib/dangling").symlink_to("python3.13/missing.py")
    (tree / "bin/python3-config").symlink_to("../lib/python3.13/os.py")
    names = [m.name for m, _ in read_members(pack(tree, tmp_path / "x.tar.zst").path)]
    assert {"./lib/up", "./lib/dangling", "./bin/python3-config"} <= set(names)


def test_fifo_is_rejected(tree: Path, tmp_path: Path) -> None:
    fifo = tree / "lib/python3.13/pipe"
    os.mkfifo(fifo)
    with pytest.raises(PackagingError, match="fifo") as caught:
        pack(tree, tmp_path / "out/x.tar.zst")
    assert str(fifo) in str(caught.value)
    assert leftovers(tmp_path / "out") == []


def test_empty_tree_is_rejected(tmp_path: Path) -> None:
    empty = tmp_path / "prefix"
    empty.mkdir()
    with pytest.raises(PackagingError, match="empty") as caught:
        pack(empty, tmp_path / "x.tar.zst")
    assert str(empty) in str(caught.value)
    assert not (tmp_path / "x.tar.zst").exists()


def test_missing_tree_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(PackagingError, match="does not exist") as caught:
        pack(tmp_path / "nope", tmp_path / "x.tar.zst")
    assert str(tmp_path / "nope") in str(caught.value)


def test_tree_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(PackagingError, match="not a directory"):
        pack(tmp_path / "file", tmp_path / "x.tar.zst")


def test_dest_inside_tree_is_rejected(tree: Path) -> None:
    with pytest.raises(PackagingError, match="inside the tree"):
        pack(tree, tree / "share/x.tar.zst")


@pytest.mark.parametrize(
    "kwargs",
    [{"threads": 0}, {"level": 0}, {"level": 23}, {"source_date_epoch": -1}, {"window_log": 40}],
)
def test_bad_parameters_are_rejected(tree: Path, tmp_path: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(PackagingError):
        pack(tree, tmp_path / "x.tar.zst", **kwargs)
    assert not (tmp_path / "x.tar.zst").exists()


# --- atomicity -----------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_midway_leaves_nothing(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    real_add = archive._add_file
    calls = 0

    def flaky_add(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise exc
        real_add(*args, **kwargs)

    monkeypatch.setattr(archive, "_add_file", flaky_add)
    dest = tmp_path / "out/x.tar.zst"
    with pytest.raises(type(exc)):
        pack(tree, dest)
    assert calls == 3
    assert leftovers(dest.parent) == []


def test_failure_keeps_the_previous_archive(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "x.tar.zst"
    first = pack(tree, dest)

    def disk_full(self: object, data: bytes) -> int:
        raise PackagingError("cannot write: No space left on device")

    (tree / "lib/python3.13/os.py").write_bytes(b"changed\n")
    monkeypatch.setattr(archive._HashingWriter, "write", disk_full)
    with pytest.raises(PackagingError, match="No space left"):
        pack(tree, dest)
    assert sha256_of(dest) == first.sha256
    assert leftovers(tmp_path) == ["prefix", "x.tar.zst"]


def test_write_error_becomes_packaging_error(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FullDisk(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

    sink = archive._HashingWriter(FullDisk(), tmp_path / "tmpfile")  # type: ignore[arg-type]
    with pytest.raises(PackagingError, match=r"cannot write .*tmpfile: No space left"):
        sink.write(b"x")
    assert sink.size == 0


# --- deep trees (finding 9: a tree 1500 directories deep gave a RecursionError) -------------

DEEP = 1500  # beyond Python's default recursion limit of 1000


@pytest.fixture
def deep_tree(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/deep/d/d/.../d/f, DEEP directories below; removed afterwards (pytest's own
    clean-up of tmp_path uses shutil.rmtree, which recurses)."""
    from orchestrator.fsutil import remove_tree

    yield _deep_tree(tmp_path / "deep")
    remove_tree(tmp_path / "deep", ignore_errors=True)


def _deep_tree(root: Path, depth: int = DEEP) -> Path:
    # Relative mkdirs: os.makedirs would itself recurse.
    root.mkdir()
    here = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=here)
            below = os.open("d", os.O_RDONLY, dir_fd=here)
            os.close(here)
            here = below
        fd = os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=here)
        os.write(fd, b"bottom\n")
        os.close(fd)
    finally:
        os.close(here)
    return root


def test_a_tree_1500_directories_deep_is_packed(deep_tree: Path, tmp_path: Path) -> None:
    info = pack(deep_tree, tmp_path / "x.tar.zst")
    members = read_members(info.path)
    assert info.members == DEEP + 1
    assert members[-1][0].name == "./" + "d/" * DEEP + "f" and members[-1][1] == b"bottom\n"
    assert [m.name.count("/") for m, _ in members] == list(range(1, DEEP + 2))


def test_the_deep_walk_keeps_the_order_of_the_recursive_one(tree: Path, tmp_path: Path) -> None:
    # Depth first, a directory before its contents, names bytewise: GNU tar's --sort=name.
    names = [m.name for m, _ in read_members(pack(tree, tmp_path / "x.tar.zst").path)]
    expected = sorted(
        ("./" + p.relative_to(tree).as_posix() for p in tree.rglob("*")),
        key=lambda name: [os.fsencode(part) for part in name.split("/")],
    )
    assert names == expected


def test_tree_sizes_of_a_deep_tree(deep_tree: Path) -> None:
    from orchestrator.metadata import tree_sizes

    sizes = tree_sizes(deep_tree, "3.13")
    assert sizes["other"] == len(b"bottom\n") == sizes["total"]


def test_a_deep_tree_is_removed(deep_tree: Path) -> None:
    from orchestrator.fsutil import remove_tree

    with pytest.raises(RecursionError):
        shutil.rmtree(deep_tree)  # why remove_tree exists
    remove_tree(deep_tree)
    assert not deep_tree.exists()
