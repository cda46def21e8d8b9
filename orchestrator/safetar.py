"""Read and extract tar streams the farm does not trust: a build container's install tree, and
every runtime archive read back (the audit, the rebuild comparison, the benchmarks).

Python's tarfile filters depend on the interpreter's patch level (3.11.7 here predates the
fixes for hard links chained through symlinks), so this module decides for itself, member by
member, before anything touches the disk or the caller (TreeRules):

- names are relative, without `..`, inside the one expected top directory (or the archive's
  root), each given once;
- only regular files, directories, symlinks and hard links; no devices, fifos or sparse files;
- a symlink's target, resolved from its own directory, stays inside the tree (and is never
  absolute); a hard link points at a regular file earlier in the same tar;
- no member lies under a symlink (every parent must be a directory member), so nothing is
  written through one by us or by `tar -x` later;
- at most `Limits.members` members, `Limits.member_bytes` per member, `Limits.total_bytes`.

tarfile itself reads a PAX or GNU long-name header's whole payload into memory, follows chains
of them recursively, and grows lists for GNU sparse maps, all before a member is returned;
open_tar_stream gives it a TarInfo class that refuses those headers from their 512-byte
block, before any payload is read. Extraction also creates files fresh (O_EXCL | O_NOFOLLOW),
drops setuid/setgid/sticky and group/other write bits, and owns them as the extracting user.

A refusal raises UnsafeArchiveError naming the member or the limit; the caller removes what
it extracted.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from orchestrator.errors import UnsafeArchiveError

MAX_NAME_LENGTH = 4096
# A GNU long link + long name, or a PAX header, precede a member; more in a row is an attack
# on tarfile's recursion (each level keeps its payload in memory).
MAX_HEADER_CHAIN = 3
_CHUNK = 1024 * 1024
_GIB = 1024**3
_EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
             tarfile.SOLARIS_XHDTYPE)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Bounds on one untrusted tar. A built runtime (3.13, fast profile) is a 10 MB archive of
    a 40 MB tar in 1771 members, the largest (libpython) 5.8 MB; docs/BENCHMARKS.md has 36 MiB
    installed for release: these leave 50x room and still stop a bomb long before memory or
    disk run out."""

    total_bytes: int = 2 * _GIB  # the uncompressed tar stream, headers included
    member_bytes: int = _GIB // 2  # one member's declared size
    members: int = 100_000
    header_bytes: int = 64 * 1024  # one PAX header's or GNU long name's payload (PATH_MAX 4096)
    window_bytes: int = 1 << 27  # the zstd window: pack_tree writes window_log 27 (zstd --long)


RUNTIME_LIMITS = Limits()


def human(size: int) -> str:
    for unit, scale in (("GiB", _GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def member_path(name: str, *, top: str | None) -> str:
    """The member's normalised relative path; refuses absolute names, `..` and names outside
    `top` (None: the archive's root is the tree, and "" is the root itself)."""
    if not name or len(name) > MAX_NAME_LENGTH or "\0" in name:
        raise UnsafeArchiveError(f"member {name[:80]!r}: empty, NUL or over-long name")
    if name.startswith("/"):
        raise UnsafeArchiveError(f"member {name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"member {name!r}: '..' in its path")
    if top is not None and (not parts or parts[0] != top):
        raise UnsafeArchiveError(f"member {name!r}: outside the expected top directory {top}/")
    return "/".join(parts)


class TreeRules:
    """The checks above, member by member, for one tar: `check` returns the member's normalised
    path or raises UnsafeArchiveError. Shared by extraction and every reader."""

    def __init__(self, *, top: str | None, limits: Limits = RUNTIME_LIMITS) -> None:
        self.top = top
        self.limits = limits
        self.root = top if top is not None else ""
        self._kinds: dict[str, str] = {self.root: "dir"}  # path -> "dir" | "file" | "symlink"
        self._count = 0
        self._declared = 0

    def check(self, member: tarfile.TarInfo) -> str:
        self._count += 1
        if self._count > self.limits.members:
            raise UnsafeArchiveError(f"more than {self.limits.members} members")
        path = member_path(member.name, top=self.top)
        if path == self.root:
            if not member.isdir():
                raise UnsafeArchiveError(f"member {member.name!r}: the top is not a directory")
            return path
        if path in self._kinds:
            raise UnsafeArchiveError(f"member {path!r}: appears twice")
        parent = posixpath.dirname(path)
        if self._kinds.get(parent) != "dir":
            raise UnsafeArchiveError(
                f"member {path!r}: its parent {parent!r} is not a directory of the tar"
            )
        if member.isdir():
            self._kinds[path] = "dir"
        elif member.isreg() and not member.issparse():
            self._count_bytes(path, member.size)
            self._kinds[path] = "file"
        elif member.issym():
            self._symlink_target(path, member.linkname)
            self._kinds[path] = "symlink"
        elif member.islnk():
            try:
                source: str | None = member_path(member.linkname, top=self.top)
            except UnsafeArchiveError:
                source = None  # outside the tree: named below as the member's fault
            if source is None or self._kinds.get(source) != "file":
                raise UnsafeArchiveError(
                    f"member {path!r}: hard link to {member.linkname!r}, which is not a "
                    "regular file earlier in the tar"
                )
            self._kinds[path] = "file"
        else:
            raise UnsafeArchiveError(f"member {path!r}: {_kind(member)} not allowed")
        return path

    def link_source(self, member: tarfile.TarInfo) -> str:
        """A checked hard link's source path."""
        return member_path(member.linkname, top=self.top)

    def _count_bytes(self, path: str, size: int) -> None:
        if size > self.limits.member_bytes:
            raise UnsafeArchiveError(
                f"member {path!r}: {human(size)} exceeds the limit of "
                f"{human(self.limits.member_bytes)} per member"
            )
        self._declared += size
        if self._declared > self.limits.total_bytes:
            raise UnsafeArchiveError(
                f"member {path!r}: the tree exceeds {human(self.limits.total_bytes)}"
            )

    def _symlink_target(self, path: str, linkname: str) -> None:
        if not linkname or linkname.startswith("/") or len(linkname) > MAX_NAME_LENGTH:
            raise UnsafeArchiveError(f"member {path!r}: symlink to {linkname[:80]!r} (absolute)")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), linkname))
        if self.top is None:
            inside = resolved != ".." and not resolved.startswith("../")
        else:
            inside = resolved == self.top or resolved.startswith(self.top + "/")
        if not inside:
            raise UnsafeArchiveError(f"member {path!r}: symlink to {linkname!r} leaves the tree")


def open_tar_stream(
    fileobj: IO[bytes] | CountingReader, *, limits: Limits = RUNTIME_LIMITS
) -> tarfile.TarFile:
    """An uncompressed tar read as a stream, its extended headers bounded (see above) and
    every byte tarfile reads counted against `limits.total_bytes`."""
    counted = (
        fileobj
        if isinstance(fileobj, CountingReader)
        else CountingReader(fileobj, limit=limits.total_bytes)
    )
    return tarfile.open(
        fileobj=cast(IO[bytes], counted),  # read() is all a stream ("r|") asks of it
        mode="r|",
        tarinfo=_bounded_tarinfo(limits),
    )


class CountingReader:
    """A read-only stream that refuses to yield more than `limit` bytes in total: what stops
    a decompression bomb, whatever the tar headers claim."""

    def __init__(self, source: IO[bytes], *, limit: int) -> None:
        self._source = source
        self.limit = limit
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        room = self.limit + 1 - self.count  # one byte more than allowed shows an excess
        data = self._source.read(min(_CHUNK if size < 0 else size, room))
        self.count += len(data)
        if self.count > self.limit:
            raise UnsafeArchiveError(f"the tar stream exceeds {human(self.limit)}")
        return data


def _bounded_tarinfo(limits: Limits) -> type[tarfile.TarInfo]:
    """A TarInfo class for one tar stream. frombuf is tarfile's public parser of each 512-byte
    header; it runs before tarfile reads an extended header's payload, so refusing there
    keeps a 500 MB long name or PAX header from ever being allocated."""

    class BoundedTarInfo(tarfile.TarInfo):
        chain = 0  # extended headers in a row so far (they precede one member)
        global_bytes = 0  # PAX global headers accumulate in tarfile.pax_headers

        @classmethod
        def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> BoundedTarInfo:
            info = super().frombuf(buf, encoding, errors)
            if info.type == tarfile.GNUTYPE_SPARSE:
                raise UnsafeArchiveError(f"member {info.name[:80]!r}: sparse file not allowed")
            if info.type not in _EXTENDED:
                cls.chain = 0
                return info
            cls.chain += 1
            if cls.chain > MAX_HEADER_CHAIN:
                raise UnsafeArchiveError(f"more than {MAX_HEADER_CHAIN} extended headers in a row")
            if info.type == tarfile.XGLTYPE:
                cls.global_bytes += info.size
            if info.size > limits.header_bytes or cls.global_bytes > limits.header_bytes:
                raise UnsafeArchiveError(
                    f"a {_header_kind(info.type)} header of {human(info.size)} exceeds the "
                    f"limit of {human(limits.header_bytes)}"
                )
            return info

        # GNU sparse maps inside PAX headers: tarfile reads them (lists as long as the stream,
        # or a ValueError) before the member reaches us. These are tarfile's private hooks
        # for them; tests/unit/test_safe_readers.py fails if a later Python renames them.
        def _proc_gnusparse_00(self, *args: object) -> None:
            raise UnsafeArchiveError(f"member {self.name[:80]!r}: sparse file not allowed")

        _proc_gnusparse_01 = _proc_gnusparse_00
        _proc_gnusparse_10 = _proc_gnusparse_00

    return BoundedTarInfo


def _header_kind(kind: bytes) -> str:
    if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
        return "GNU long name"
    return "PAX global" if kind == tarfile.XGLTYPE else "PAX"


def extract_untrusted(
    tar: tarfile.TarFile,
    dest: Path,
    *,
    top: str,
    max_bytes: int = RUNTIME_LIMITS.total_bytes,
    max_members: int = RUNTIME_LIMITS.members,
) -> None:
    """Extract `tar` (opened for streaming or not; open_tar_stream bounds its headers) under
    `dest`, which must be empty."""
    rules = TreeRules(
        top=top, limits=Limits(total_bytes=max_bytes, member_bytes=max_bytes, members=max_members)
    )
    (dest / top).mkdir(mode=0o755)
    for member in tar:
        path = rules.check(member)
        if path == top:
            os.chmod(dest / top, (member.mode & 0o755) | 0o700)
            continue
        target = dest / path
        mode = member.mode & 0o755
        if member.isdir():
            target.mkdir(mode=0o700)
            os.chmod(target, mode | 0o700)
        elif member.isreg():
            _write_file(tar, member, target, mode)
        elif member.issym():
            os.symlink(member.linkname, target)
        else:  # a hard link, checked to point at a regular file already extracted
            os.link(dest / rules.link_source(member), target, follow_symlinks=False)
        if not member.issym():
            os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, mode: int) -> None:
    source = tar.extractfile(member)
    if source is None:
        raise UnsafeArchiveError(f"member {member.name!r}: unreadable")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        remaining = member.size
        while remaining > 0:
            chunk = source.read(min(_CHUNK, remaining))
            if not chunk:
                raise UnsafeArchiveError(f"member {member.name!r}: truncated")
            out.write(chunk)
            remaining -= len(chunk)
    os.chmod(target, mode)


def _kind(member: tarfile.TarInfo) -> str:
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "fifo"
    if member.issparse():
        return "sparse file"
    return f"member type {member.type!r}"
