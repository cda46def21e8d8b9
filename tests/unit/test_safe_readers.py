"""Every reader of a runtime archive against archives crafted here: bombs, huge headers and
members that would escape the tree. Each is refused with one line naming the archive and the
member or the limit, before more than a bounded amount is read."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
import zstandard

from orchestrator.archive import pack_tree, sha256_of
from orchestrator.cli import main
from orchestrator.errors import UnsafeArchiveError
from orchestrator.safearchive import open_archive
from orchestrator.safetar import RUNTIME_LIMITS, Limits
from orchestrator.verify.elfaudit import scan_archive
from orchestrator.verify.reproduce import compare_archives, read_members
from orchestrator.verify.runtime import audit_archive

MiB = 1024**2
GiB = 1024**3
BLOCK = 512


# --- crafting ------------------------------------------------------------------------------


def _info(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _header(info: tarfile.TarInfo, fmt: int = tarfile.GNU_FORMAT) -> bytes:
    return info.tobuf(fmt, "utf-8", "surrogateescape")


def _data(payload: bytes) -> bytes:
    return payload + bytes(-len(payload) % BLOCK)


def _zeros(size: int) -> Iterator[bytes]:
    """`size` zero bytes and their padding, in chunks: a bomb never held in memory."""
    chunk = bytes(MiB)
    left = size
    while left > 0:
        yield chunk[: min(left, MiB)]
        left -= MiB
    yield bytes(-size % BLOCK)


def _file(name: str, payload: bytes = b"", **fields: object) -> Iterator[bytes]:
    yield _header(_info(name, size=len(payload), **fields))
    yield _data(payload)


def _entry(name: str, kind: bytes, **fields: object) -> Iterator[bytes]:
    yield _header(_info(name, kind, **fields))


def _runtime_like() -> Iterator[bytes]:
    """The shape pack_tree writes: "./" names, no root entry, a directory before its
    contents."""
    for name in ("./bin", "./include", "./lib"):
        yield from _entry(name, tarfile.DIRTYPE)
    yield from _file("./bin/python3.13", b"#!/bin/sh\n", mode=0o755)
    yield from _entry("./bin/python3", tarfile.SYMTYPE, linkname="python3.13")
    yield from _file("./lib/os.py", b"import sys\n")


def _write(path: Path, *parts: Iterable[bytes], level: int = 1, window_log: int = 0) -> Path:
    """A .tar.zst of the given tar pieces (streamed: a 3 GiB member costs a second)."""
    params = zstandard.ZstdCompressionParameters.from_level(level, window_log=window_log)
    with path.open("wb") as out:
        writer = zstandard.ZstdCompressor(compression_params=params).stream_writer(
            out, closefd=False
        )
        for part in parts:
            for chunk in part:
                writer.write(chunk)
        writer.write(bytes(2 * BLOCK))  # end of archive
        writer.flush(zstandard.FLUSH_FRAME)
    return path


def _good(directory: Path) -> Path:
    return _write(directory / "good.tar.zst", _runtime_like())


# --- the readers -----------------------------------------------------------------------------


def _record(archive: Path) -> dict[str, object]:
    return {
        "cell": "3.13.5-debian-12-amd64",
        "version": "3.13.5",
        "stack": "debian-12",
        "arch": "amd64",
        "major": 3,
        "minor": 13,
        "profile": "fast",
        "sha256": sha256_of(archive),
        "expected_modules": [],
    }


Reader = Callable[[Path, Limits], object]
READERS: dict[str, Reader] = {
    "elfaudit.scan_archive": lambda path, limits: scan_archive(path, limits=limits),
    "reproduce.read_members": lambda path, limits: read_members(path, limits=limits),
    "verify: runtime.audit_archive": lambda path, limits: audit_archive(
        path, _record(path), limits=limits
    ),
    "verify --rebuild: compare_archives": lambda path, limits: compare_archives(
        _good(path.parent), path, limits=limits
    ),
}


def _refused(reader: str, archive: Path, match: str, limits: Limits = RUNTIME_LIMITS) -> str:
    with pytest.raises(UnsafeArchiveError, match=match) as caught:
        READERS[reader](archive, limits)
    message = str(caught.value)
    assert message.startswith(f"{archive}: ") and "\n" not in message
    assert caught.value.exit_code == 14
    return message


# Each case: tar pieces after the runtime-like members, and what the refusal says.
HOSTILE: dict[str, tuple[Callable[[], Iterable[bytes]], str]] = {
    "absolute path": (lambda: _file("/etc/cron.d/farm", b"* * * * * root id\n"), "absolute"),
    "dot-dot": (lambda: _file("./lib/../../escape", b"x"), r"'\.\.' in its path"),
    "dot-dot at the top": (lambda: _file("../escape", b"x"), r"'\.\.' in its path"),
    "symlink escaping": (
        lambda: _entry("./lib/etc", tarfile.SYMTYPE, linkname="../../etc"),
        "symlink to '../../etc' leaves the tree",
    ),
    "symlink absolute": (
        lambda: _entry("./lib/passwd", tarfile.SYMTYPE, linkname="/etc/passwd"),
        "symlink to '/etc/passwd'",
    ),
    "hardlink to a host path": (
        lambda: _entry("./lib/passwd", tarfile.LNKTYPE, linkname="/etc/passwd"),
        "hard link to '/etc/passwd'",
    ),
    "hardlink escaping": (
        lambda: _entry("./lib/up", tarfile.LNKTYPE, linkname="../outside"),
        "hard link to '../outside'",
    ),
    "character device": (
        lambda: _entry("./lib/mem", tarfile.CHRTYPE, devmajor=1, devminor=1),
        "character device not allowed",
    ),
    "block device": (
        lambda: _entry("./lib/sda", tarfile.BLKTYPE, devmajor=8, devminor=0),
        "block device not allowed",
    ),
    "fifo": (lambda: _entry("./lib/pipe", tarfile.FIFOTYPE), "fifo not allowed"),
    "under a symlink": (
        lambda: [
            *_entry("./share", tarfile.SYMTYPE, linkname="lib"),
            *_file("./share/planted", b"x"),
        ],
        "parent 'share' is not a directory",
    ),
    "twice": (lambda: _file("./lib/os.py", b"other\n"), "appears twice"),
    "GNU sparse": (
        lambda: _entry("./lib/holes", tarfile.GNUTYPE_SPARSE, size=0),
        "sparse file not allowed",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("reader", sorted(READERS))
def test_hostile_members_are_refused_by_every_reader(
    tmp_path: Path, reader: str, case: str
) -> None:
    pieces, match = HOSTILE[case]
    archive = _write(tmp_path / "hostile.tar.zst", _runtime_like(), pieces())
    _refused(reader, archive, match)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_3_gib_member_in_a_100_kb_archive(tmp_path: Path, reader: str) -> None:
    # Finding 6 as reported: spooled 3 GB from a 91 KB archive. Refused from its header.
    archive = _write(
        tmp_path / "bomb.tar.zst",
        _runtime_like(),
        [_header(_info("./lib/libpython3.13.so", size=3 * GiB))],
        _zeros(3 * GiB),
    )
    assert archive.stat().st_size < 200_000
    message = _refused(reader, archive, "exceeds the limit of 512.0 MiB per member")
    assert "'lib/libpython3.13.so': 3.0 GiB" in message


def test_the_bomb_stops_after_its_header(tmp_path: Path) -> None:
    archive = _write(
        tmp_path / "bomb.tar.zst",
        _runtime_like(),
        [_header(_info("./lib/zeros", size=3 * GiB))],
        _zeros(3 * GiB),
    )
    with open_archive(archive) as reader:
        with pytest.raises(UnsafeArchiveError, match="per member"):
            for _ in reader:
                pass
        assert reader.bytes_read < MiB


@pytest.mark.parametrize("reader", sorted(READERS))
def test_many_members_each_small_over_the_total(tmp_path: Path, reader: str) -> None:
    limits = Limits(total_bytes=8 * MiB, member_bytes=4 * MiB)
    bombs = [
        [*_entry(f"./lib/z{i}", tarfile.REGTYPE, size=3 * MiB), *_zeros(3 * MiB)] for i in range(4)
    ]
    archive = _write(tmp_path / "bombs.tar.zst", _runtime_like(), *bombs)
    _refused(reader, archive, "'lib/z2': the tree exceeds 8.0 MiB", limits)


def test_the_uncompressed_stream_is_counted_whatever_the_headers_say(tmp_path: Path) -> None:
    # Header blocks alone (empty files) are bytes too: the decompressed stream has a bound.
    limits = Limits(total_bytes=64 * 1024)
    empties = [_file(f"./lib/f{i}") for i in range(1000)]
    archive = _write(tmp_path / "headers.tar.zst", _runtime_like(), *empties)
    with open_archive(archive, limits=limits) as reader:
        with pytest.raises(UnsafeArchiveError, match=r"tar stream exceeds 64\.0 KiB"):
            for _ in reader:
                pass
        assert reader.bytes_read == 64 * 1024 + 1
    _refused("reproduce.read_members", archive, "tar stream exceeds 64.0 KiB", limits)


def _extended(kind: bytes, size: int) -> Iterator[bytes]:
    """An extended header declaring `size` bytes of payload, the payload (zeros), then the
    member it would describe."""
    name = "././@PaxHeader" if kind in (tarfile.XHDTYPE, tarfile.XGLTYPE) else "././@LongLink"
    yield _header(_info(name, kind, size=size), tarfile.USTAR_FORMAT)
    yield from _zeros(size)
    yield from _file("./lib/after", b"x")


@pytest.mark.parametrize(
    ("kind", "what"),
    [(tarfile.XHDTYPE, "PAX"), (tarfile.XGLTYPE, "PAX global"),
     (tarfile.GNUTYPE_LONGNAME, "GNU long name"), (tarfile.GNUTYPE_LONGLINK, "GNU long name")],
)  # fmt: skip
def test_a_500_mb_extended_header_is_never_read(tmp_path: Path, kind: bytes, what: str) -> None:
    archive = _write(tmp_path / "header.tar.zst", _runtime_like(), _extended(kind, 500 * MiB))
    with open_archive(archive) as reader:
        with pytest.raises(UnsafeArchiveError, match=f"a {what} header of 500.0 MiB exceeds"):
            for _ in reader:
                pass
        assert reader.bytes_read < MiB  # tarfile alone would have read all 500 MiB into memory
    for name in READERS:
        _refused(name, archive, "header of 500.0 MiB exceeds the limit of 64.0 KiB")


def _pax(records: dict[str, str], kind: bytes = tarfile.XHDTYPE) -> Iterator[bytes]:
    payload = b""
    for key, value in records.items():
        body = f" {key}={value}\n".encode()
        length = len(body) + 1  # the record's length counts its own digits
        while len(str(length)) + len(body) != length:
            length = len(str(length)) + len(body)
        payload += str(length).encode() + body
    yield _header(_info("././@PaxHeader", kind, size=len(payload)), tarfile.USTAR_FORMAT)
    yield _data(payload)


def test_a_long_pax_name_within_the_limit_reads(tmp_path: Path) -> None:
    name = "./lib/" + "d" * 200
    archive = _write(
        tmp_path / "pax.tar.zst", _runtime_like(), _pax({"path": name}), _file("./lib/x", b"1")
    )
    assert read_members(archive)[name].size == 1


def test_chains_of_extended_headers_are_refused(tmp_path: Path) -> None:
    chain = [_pax({"comment": str(i)}) for i in range(10)]
    archive = _write(tmp_path / "chain.tar.zst", _runtime_like(), *chain, _file("./lib/x"))
    _refused("reproduce.read_members", archive, "more than 3 extended headers in a row")


def test_global_pax_headers_add_up(tmp_path: Path) -> None:
    limits = Limits(header_bytes=4096)
    globals_ = [
        [*_pax({f"k{i}": "v" * 1000}, tarfile.XGLTYPE), *_file(f"./lib/f{i}")] for i in range(8)
    ]
    archive = _write(tmp_path / "globals.tar.zst", _runtime_like(), *globals_)
    _refused("elfaudit.scan_archive", archive, "PAX global header", limits)


def test_pax_sparse_maps_are_refused_before_tarfile_reads_them(tmp_path: Path) -> None:
    # GNU sparse 1.0: the map's length comes first in the data; tarfile would read it all.
    sparse = [
        *_pax({"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "x"}),
        *_file("./lib/GNUSparseFile.0/x", b"999999999999\n" + b"0\n" * 200),
    ]
    archive = _write(tmp_path / "sparse.tar.zst", _runtime_like(), sparse)
    _refused("reproduce.read_members", archive, "sparse file not allowed")


def test_too_many_members(tmp_path: Path) -> None:
    archive = _write(
        tmp_path / "many.tar.zst", _runtime_like(), *[_file(f"./lib/f{i}") for i in range(50)]
    )
    _refused("elfaudit.scan_archive", archive, "more than 20 members", Limits(members=20))


def test_a_zstd_window_over_the_limit_is_refused_from_the_frame_header(tmp_path: Path) -> None:
    archive = _write(tmp_path / "window.tar.zst", _runtime_like(), window_log=20)
    limits = Limits(window_bytes=1 << 17)
    _refused(
        "reproduce.read_members", archive, "1.0 MiB window, over the limit of 128.0 KiB", limits
    )
    assert read_members(archive)  # the default limit (pack_tree's 2**27) reads it


def test_a_declared_content_size_over_the_total_is_refused(tmp_path: Path) -> None:
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(_info("./bin", tarfile.DIRTYPE))
    archive = tmp_path / "declared.tar.zst"
    archive.write_bytes(zstandard.ZstdCompressor().compress(blob.getvalue()))  # size in the frame
    _refused(
        "reproduce.read_members",
        archive,
        "declares 10.0 KiB uncompressed",
        Limits(total_bytes=4096),
    )


def test_damaged_archives_are_still_a_verification_error(tmp_path: Path) -> None:
    from orchestrator.errors import VerificationError

    good = _good(tmp_path)
    truncated = tmp_path / "truncated.tar.zst"
    truncated.write_bytes(good.read_bytes()[:-20])
    for path in (truncated, tmp_path / "missing.tar.zst"):
        with pytest.raises(VerificationError, match="cannot read the archive"):
            read_members(path)


# --- normal archives read exactly as before ----------------------------------------------------


def test_a_packed_runtime_reads_every_member(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "python3.13").write_bytes(b"\x7fELF-not-really")
    (tree / "bin" / "python3").symlink_to("python3.13")
    deep = tree / "lib" / ("long-directory-name-" * 8) / "pkg"
    deep.mkdir(parents=True)  # names over 100 characters: GNU long names
    (deep / "module.py").write_text("x = 1\n")
    (tree / "lib" / "hard").hardlink_to(deep / "module.py")
    (tree / "lib" / "up").symlink_to("../bin/python3.13")
    archive = pack_tree(tree, tmp_path / "rt.tar.zst", source_date_epoch=0, level=3).path
    with open_archive(archive) as reader:
        seen = {entry.path: entry.info.type for entry in reader}
    long_module = f"lib/{'long-directory-name-' * 8}/pkg/module.py"
    # "lib/hard" sorts first, so it carries the data and the long name is the link.
    assert (seen["lib/hard"], seen[long_module]) == (tarfile.REGTYPE, tarfile.LNKTYPE)
    assert seen["lib/up"] == tarfile.SYMTYPE
    members = read_members(archive)
    assert set(members) == {f"./{path}" for path in seen}
    assert scan_archive(archive).members == tuple(seen)


# --- through the CLI: refused before the engine is asked ---------------------------------------


@pytest.fixture
def matrix(tmp_path: Path, repo_root: Path) -> Path:
    shutil.copy(repo_root / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copytree(repo_root / "templates", tmp_path / "templates")
    shutil.copytree(repo_root / "dockerfiles", tmp_path / "dockerfiles")
    return tmp_path / "matrix.yaml"


@pytest.mark.parametrize("rebuild", [[], ["--rebuild"]])
def test_cli_verify_refuses_a_hostile_archive_in_one_line(
    tmp_path: Path, matrix: Path, rebuild: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _write(
        tmp_path / "python-3.13.5-debian-12-amd64.tar.zst",
        _runtime_like(),
        _entry("./lib/hosts", tarfile.LNKTYPE, linkname="/etc/hosts"),
    )
    (tmp_path / "python-3.13.5-debian-12-amd64.json").write_text(json.dumps(_record(archive)))
    code = main(["--matrix", str(matrix), "verify", *rebuild, str(archive)])
    err = capsys.readouterr().err
    assert code == 14, err
    assert err.startswith(f"error: {archive}: member 'lib/hosts': hard link to '/etc/hosts'")
    assert err.count("\n") == 1
