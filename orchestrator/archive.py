"""Pack an installed CPython prefix into a deterministic, flat .tar.zst archive.

The same tree packed twice, on any host, gives the same bytes: members are walked in bytewise
name order, owners, modes and mtimes are normalized, and zstd runs in multi-threaded mode, whose
output does not depend on the worker count. Members are named "./bin", "./lib/..." (no root
entry), so `tar --zstd -xf ARCHIVE -C DIR` turns DIR into a working prefix.

Everything streams: tar -> zstd -> hash -> a temporary file beside the destination, renamed into
place only once complete, so the destination never holds a partial archive.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

import zstandard

from orchestrator.errors import PackagingError
from orchestrator.fsutil import fsync_dir, open_regular, walk_tree, write_atomic

CHUNK_SIZE = 1024 * 1024

DIR_MODE = 0o755
EXEC_MODE = 0o755
FILE_MODE = 0o644
SYMLINK_MODE = 0o777

_RELOCATABLE_HINT = "a relocatable runtime may only hold relative symlinks that stay inside it"


@dataclass(frozen=True, kw_only=True)
class ArchiveInfo:
    path: Path
    sha256: str
    size: int
    members: int  # tar entries, hardlinks included


@dataclass(frozen=True, kw_only=True)
class _Entry:
    path: str  # on disk
    arcname: str  # "./lib/python3.13/os.py"
    st: os.stat_result


class _HashingWriter:
    """The compressor's sink: hashes and counts compressed bytes on their way to disk."""

    def __init__(self, out: BinaryIO, path: Path) -> None:
        self._out = out
        self._path = path
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        try:
            self._out.write(data)
        except OSError as exc:
            raise PackagingError(f"cannot write {self._path}: {exc.strerror or exc}") from None
        self._digest.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def pack_tree(
    tree: Path,
    dest: Path,
    *,
    source_date_epoch: int,
    level: int = 22,
    window_log: int = 27,
    threads: int = 2,
) -> ArchiveInfo:
    """Pack the install tree `tree` into `dest` (.tar.zst); return its hash, size, entry count.

    Mtimes newer than `source_date_epoch` are clamped to it. The defaults mirror
    `zstd -22 --long`; a window of 2**27 is what decoders accept without extra flags.
    """
    if source_date_epoch < 0:
        raise PackagingError(f"source_date_epoch must not be negative, got {source_date_epoch}")
    if not 1 <= level <= zstandard.MAX_COMPRESSION_LEVEL:
        raise PackagingError(
            f"zstd level must be 1..{zstandard.MAX_COMPRESSION_LEVEL}, got {level}"
        )
    if threads < 1:
        # threads=0 is zstd's single-threaded mode, whose output differs from the multi-threaded
        # one; allowing it would let two hosts produce different archives from the same tree.
        raise PackagingError(f"threads must be at least 1, got {threads}")
    root = _check_tree(tree)
    _check_dest_outside(root, dest)
    # Multi-threaded output is the same for any threads >= 1 (tested). At level 22 with long
    # matching a zstd job is 512 MiB, so a smaller tar is one job on one worker, buffered whole
    # inside zstd: threads>1 buys little speed there.
    try:
        params = zstandard.ZstdCompressionParameters.from_level(
            level,
            window_log=window_log,
            enable_ldm=True,
            threads=threads,
            write_checksum=True,
        )
        compressor = zstandard.ZstdCompressor(compression_params=params)
    except zstandard.ZstdError as exc:
        raise PackagingError(f"invalid zstd parameters (window_log={window_log}): {exc}") from None

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.tmp-")
    except OSError as exc:
        raise PackagingError(
            f"cannot create a file in {dest.parent}: {exc.strerror or exc}"
        ) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            sink = _HashingWriter(out, tmp)
            members = _write_archive(os.fspath(tree), root, sink, compressor, source_date_epoch)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; an archive is not a secret
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PackagingError(f"cannot write {dest}: {exc.strerror or exc}") from None
    except BaseException:
        # Includes KeyboardInterrupt: never leave a temp file behind.
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)
    return ArchiveInfo(path=dest, sha256=sink.hexdigest(), size=sink.size, members=members)


def write_sha256_file(info: ArchiveInfo) -> Path:
    """Write `<archive>.sha256` beside the archive, in the format `sha256sum -c` reads."""
    name = info.path.name
    if any(c in name for c in "\\\n\r"):
        # sha256sum escapes such names; consumers should not have to care.
        raise PackagingError(f"{info.path}: archive name unfit for a .sha256 file")
    path = info.path.with_name(name + ".sha256")
    write_atomic(path, f"{info.sha256}  {name}\n".encode())
    return path


# The largest file sha256_of reads: an archive is at most its tar (safetar.Limits.total_bytes).
MAX_HASHED_BYTES = 2 * 1024**3


def sha256_of(path: Path, *, limit: int = MAX_HASHED_BYTES) -> str:
    """sha256 of a regular file of at most `limit` bytes (FileRefused otherwise: /dev/zero
    would hash forever, a fifo block)."""
    digest = hashlib.sha256()
    try:
        with open_regular(path, limit=limit) as f:
            while chunk := f.read(CHUNK_SIZE):
                digest.update(chunk)
    except OSError as exc:
        raise PackagingError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _write_archive(
    tree: str, root: str, sink: _HashingWriter, compressor: zstandard.ZstdCompressor, epoch: int
) -> int:
    # The zstandard stubs want IO[bytes]; the writer only ever calls write() and flush().
    zout = compressor.stream_writer(cast(IO[bytes], sink), closefd=False)
    members = 0
    hardlinks: dict[tuple[int, int], str] = {}
    try:
        with tarfile.open(
            fileobj=zout,
            mode="w|",
            format=tarfile.GNU_FORMAT,
            encoding="utf-8",
            errors="surrogateescape",
        ) as tar:
            for entry in _walk(tree):
                info = _tarinfo(entry, root=root, epoch=epoch, hardlinks=hardlinks)
                if info.isreg():
                    _add_file(tar, info, entry)
                else:
                    tar.addfile(info)
                members += 1
        # Not in a finally: ending the frame on an error would first compress whatever zstd has
        # buffered (up to a whole job), which makes Ctrl-C slow for an archive we discard anyway.
        zout.flush(zstandard.FLUSH_FRAME)
    except zstandard.ZstdError as exc:
        raise PackagingError(f"zstd compression failed: {exc}") from None
    return members


def _add_file(tar: tarfile.TarFile, info: tarfile.TarInfo, entry: _Entry) -> None:
    try:
        with open(entry.path, "rb") as src:
            st = os.fstat(src.fileno())
            # tarfile copies exactly info.size bytes; a file swapped or resized since the walk
            # would be silently cut or fail half-way with a vaguer error.
            if (st.st_dev, st.st_ino, st.st_size) != (
                entry.st.st_dev,
                entry.st.st_ino,
                entry.st.st_size,
            ):
                raise PackagingError(f"{entry.path}: changed while being packed")
            tar.addfile(info, src)
    except OSError as exc:
        raise PackagingError(f"cannot read {entry.path}: {exc.strerror or exc}") from None


def _tarinfo(
    entry: _Entry, *, root: str, epoch: int, hardlinks: dict[tuple[int, int], str]
) -> tarfile.TarInfo:
    st = entry.st
    info = tarfile.TarInfo(entry.arcname)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = min(st.st_mtime_ns // 1_000_000_000, epoch)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = DIR_MODE
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.mode = SYMLINK_MODE
        info.linkname = _checked_link_target(entry, root)
    elif stat.S_ISREG(st.st_mode):
        info.mode = EXEC_MODE if st.st_mode & 0o111 else FILE_MODE
        key = (st.st_dev, st.st_ino)
        first = hardlinks.get(key) if st.st_nlink > 1 else None
        if first is not None:
            # The walk order is fixed, so which name carries the data is too.
            info.type = tarfile.LNKTYPE
            info.linkname = first
        else:
            info.type = tarfile.REGTYPE
            info.size = st.st_size
            if st.st_nlink > 1:
                hardlinks[key] = entry.arcname
    else:
        raise PackagingError(
            f"{entry.path}: is a {_kind(st.st_mode)}; an install tree may only hold"
            " directories, regular files and symlinks"
        )
    return info


def _checked_link_target(entry: _Entry, root: str) -> str:
    try:
        target = os.readlink(entry.path)
    except OSError as exc:
        raise PackagingError(f"cannot read symlink {entry.path}: {exc.strerror or exc}") from None
    if os.path.isabs(target):
        raise PackagingError(
            f"{entry.path}: symlink to absolute path {target!r}", hint=_RELOCATABLE_HINT
        )
    # By text, from the link's own directory: catches "../../<prefix name>/x", which resolves
    # here but dangles once extracted under another name.
    lexical = posixpath.normpath(posixpath.join(posixpath.dirname(entry.arcname), target))
    # Through the filesystem: a chain via another link (a/up -> .., a/b -> up/..) can escape
    # where the text alone does not.
    resolved = os.path.realpath(entry.path)
    if lexical == ".." or lexical.startswith("../") or not _is_within(resolved, root):
        raise PackagingError(
            f"{entry.path}: symlink target {target!r} points outside the tree",
            hint=_RELOCATABLE_HINT,
        )
    return target


def _walk(directory: str) -> Iterator[_Entry]:
    """Everything below `directory` in archive order (fsutil.walk_tree: iterative, so depth is
    bounded by PATH_MAX, not by Python's recursion limit)."""
    walk = walk_tree(directory)
    while True:
        try:
            found = next(walk, None)
        except OSError as exc:
            where = exc.filename or directory
            raise PackagingError(f"cannot read {where}: {exc.strerror or exc}") from None
        if found is None:
            return
        path, relative, st = found
        yield _Entry(path=path, arcname=f"./{relative}", st=st)


def _check_tree(tree: Path) -> str:
    """Return the tree's real path once it is known to be a non-empty directory."""
    try:
        st = os.stat(tree)
        if not stat.S_ISDIR(st.st_mode):
            raise PackagingError(f"{tree}: install tree is not a directory")
        with os.scandir(tree) as it:
            empty = next(it, None) is None
    except FileNotFoundError:
        raise PackagingError(f"{tree}: install tree does not exist") from None
    except OSError as exc:
        raise PackagingError(f"cannot read install tree {tree}: {exc.strerror or exc}") from None
    if empty:
        raise PackagingError(
            f"{tree}: install tree is empty", hint="did `make install` run into this prefix?"
        )
    return os.path.realpath(tree)


def _check_dest_outside(root: str, dest: Path) -> None:
    # The temp file would otherwise show up in the walk and the archive would contain itself.
    parent = os.path.realpath(dest.parent)
    if _is_within(parent, root):
        raise PackagingError(f"{dest}: the archive must not be written inside the tree it packs")


def _is_within(path: str, root: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"
