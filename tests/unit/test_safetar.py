"""The strict extractor against crafted tars, alone and through cellbuild._copy_out."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import cellbuild
from orchestrator.errors import CellBuildError, UnsafeArchiveError
from orchestrator.safetar import extract_untrusted

TOP = "python-farm"


def _entry(
    name: str, kind: bytes = tarfile.REGTYPE, **fields: object
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    data = fields.pop("data", b"")
    assert isinstance(data, bytes)
    for key, value in fields.items():
        setattr(info, key, value)
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    if kind == tarfile.DIRTYPE:
        info.mode = 0o755
    return info, data


def _tar(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def _extract(blob: bytes, dest: Path, **limits: int) -> None:
    dest.mkdir(exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r|") as tar:
        extract_untrusted(tar, dest, top=TOP, **limits)


def _tree(*extra: tuple[tarfile.TarInfo, bytes]) -> bytes:
    return _tar(
        _entry(f"{TOP}/", tarfile.DIRTYPE),
        _entry(f"{TOP}/bin", tarfile.DIRTYPE),
        _entry(f"{TOP}/bin/python3.13", data=b"\x7fELF...", mode=0o755),
        *extra,
    )


def test_a_normal_tree_comes_out_byte_for_byte(tmp_path: Path) -> None:
    blob = _tree(
        _entry(f"{TOP}/bin/python3", tarfile.SYMTYPE, linkname="python3.13"),
        _entry(f"{TOP}/lib", tarfile.DIRTYPE),
        _entry(f"{TOP}/lib/os.py", data=b"import sys\n", mode=0o644, mtime=1_700_000_000),
        _entry(f"{TOP}/bin/python3.13-hard", tarfile.LNKTYPE, linkname=f"{TOP}/bin/python3.13"),
    )
    _extract(blob, tmp_path / "out")
    root = tmp_path / "out" / TOP
    assert (root / "lib" / "os.py").read_bytes() == b"import sys\n"
    assert (root / "lib" / "os.py").stat().st_mtime == 1_700_000_000
    assert (root / "bin" / "python3.13").stat().st_mode & 0o777 == 0o755
    assert os.readlink(root / "bin" / "python3") == "python3.13"
    assert (root / "bin" / "python3.13-hard").samefile(root / "bin" / "python3.13")


def test_hard_link_to_a_host_file_then_a_file_of_that_name(tmp_path: Path) -> None:
    victim = tmp_path / "host-file"
    victim.write_text("host data\n")
    blob = _tree(
        _entry(f"{TOP}/evil", tarfile.LNKTYPE, linkname=str(victim)),
        _entry(f"{TOP}/evil", data=b"overwritten\n"),
    )
    with pytest.raises(UnsafeArchiveError, match="evil"):
        _extract(blob, tmp_path / "out")
    assert victim.read_text() == "host data\n"


def test_hard_link_pulling_in_a_host_file(tmp_path: Path) -> None:
    victim = tmp_path / "secret"
    victim.write_text("secret\n")
    relative = os.path.relpath(victim, tmp_path / "out")
    for linkname in (str(victim), relative, f"{TOP}/../secret"):
        dest = tmp_path / "out"
        blob = _tree(_entry(f"{TOP}/lib-secret", tarfile.LNKTYPE, linkname=linkname))
        with pytest.raises(UnsafeArchiveError):
            _extract(blob, dest)
        assert not (dest / TOP / "lib-secret").exists()
        import shutil

        shutil.rmtree(dest)


@pytest.mark.parametrize(
    ("kind", "what"),
    [(tarfile.CHRTYPE, "character device"), (tarfile.BLKTYPE, "block device"),
     (tarfile.FIFOTYPE, "fifo")],
)  # fmt: skip
def test_devices_and_fifos_are_refused(tmp_path: Path, kind: bytes, what: str) -> None:
    blob = _tree(_entry(f"{TOP}/dev-null", kind, devmajor=1, devminor=3))
    with pytest.raises(UnsafeArchiveError, match=what):
        _extract(blob, tmp_path / "out")
    assert not (tmp_path / "out" / TOP / "dev-null").exists()


@pytest.mark.parametrize(
    "name",
    ["/etc/cron.d/x", f"{TOP}/../x", f"{TOP}/lib/../../x", "other-top/x", "x", ""],
)
def test_names_outside_the_tree_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeArchiveError):
        _extract(_tree(_entry(name, data=b"x")), tmp_path / "out")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("linkname", ["/etc/passwd", "../../../../etc", "../..", "bin/../../.."])
def test_symlinks_leaving_the_tree_are_refused(tmp_path: Path, linkname: str) -> None:
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        _extract(
            _tree(_entry(f"{TOP}/bin/escape", tarfile.SYMTYPE, linkname=linkname)), tmp_path / "out"
        )


def test_writing_through_a_symlink_is_refused(tmp_path: Path) -> None:
    # An in-tree symlink to a directory, then a file "inside" it: never written through links.
    outside = tmp_path / "outside"
    outside.mkdir()
    blob = _tree(
        _entry(f"{TOP}/lib", tarfile.SYMTYPE, linkname="bin"),
        _entry(f"{TOP}/lib/planted", data=b"x"),
    )
    with pytest.raises(UnsafeArchiveError, match="parent"):
        _extract(blob, tmp_path / "out")
    assert not (tmp_path / "out" / TOP / "bin" / "planted").exists()


def test_duplicates_and_setuid_bits(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="twice"):
        _extract(_tree(_entry(f"{TOP}/bin/python3.13", data=b"again")), tmp_path / "a")
    _extract(_tree(_entry(f"{TOP}/bin/suid", data=b"x", mode=0o6777)), tmp_path / "b")
    assert (tmp_path / "b" / TOP / "bin" / "suid").stat().st_mode & 0o7777 == 0o755


def test_size_and_member_bounds(tmp_path: Path) -> None:
    big = _tree(_entry(f"{TOP}/bin/big", data=b"x" * 4096))
    with pytest.raises(UnsafeArchiveError, match="exceeds"):
        _extract(big, tmp_path / "a", max_bytes=1024)
    many = _tree(*[_entry(f"{TOP}/bin/f{i}", data=b"") for i in range(20)])
    with pytest.raises(UnsafeArchiveError, match="more than 10 members"):
        _extract(many, tmp_path / "b", max_members=10)


def test_over_long_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="over-long"):
        _extract(_tree(_entry(f"{TOP}/" + "a/" * 3000 + "x", data=b"")), tmp_path / "out")


class _FakeContainer:
    """Just what _copy_out asks of a container: its tar, in chunks as the engine sends it."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def get_archive(self, path: str) -> tuple[Iterator[bytes], dict[str, object]]:
        assert path == cellbuild.INSTALL_PREFIX
        chunks = (self.blob[i : i + 1000] for i in range(0, len(self.blob), 1000))
        return chunks, {}


def test_copy_out_refuses_a_hostile_container_and_keeps_nothing(tmp_path: Path) -> None:
    victim = tmp_path / "host-file"
    victim.write_text("host data\n")
    prefix = tmp_path / "work" / "prefix"
    prefix.mkdir(parents=True)
    blob = _tree(
        _entry(f"{TOP}/evil", tarfile.LNKTYPE, linkname=str(victim)),
        _entry(f"{TOP}/evil", data=b"overwritten\n"),
    )
    with pytest.raises(CellBuildError, match=r"refused.*evil"):
        cellbuild._copy_out(_FakeContainer(blob), prefix)  # type: ignore[arg-type]
    assert victim.read_text() == "host data\n"
    assert prefix.is_dir() and not any(prefix.iterdir())
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["prefix"]


def test_copy_out_unpacks_a_good_tree(tmp_path: Path) -> None:
    prefix = tmp_path / "work" / "prefix"
    prefix.mkdir(parents=True)
    cellbuild._copy_out(_FakeContainer(_tree()), prefix)  # type: ignore[arg-type]
    assert (prefix / "bin" / "python3.13").read_bytes() == b"\x7fELF..."
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["prefix"]


def test_copy_out_refuses_a_huge_pax_header_from_its_first_block(tmp_path: Path) -> None:
    # The header declares 500 MiB; tarfile alone would try to read it all into memory.
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, 500 * 1024**2
    blob = pax.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape") + bytes(10240)
    prefix = tmp_path / "work" / "prefix"
    prefix.mkdir(parents=True)
    with pytest.raises(CellBuildError, match=r"refused: a PAX header of 500.0 MiB exceeds"):
        cellbuild._copy_out(_FakeContainer(blob), prefix)  # type: ignore[arg-type]
    assert prefix.is_dir() and not any(prefix.iterdir())
