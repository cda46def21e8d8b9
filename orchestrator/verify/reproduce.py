"""Compare two archives member by member: what differs between two builds of one cell.

Streams both archives (never whole in memory) and reports, per member, which of size,
content hash, mode, mtime, link target or type differ, plus members only in one of them.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from pathlib import Path

import zstandard


@dataclass(frozen=True, kw_only=True)
class Member:
    type: str
    size: int
    sha256: str
    mode: int
    mtime: int
    linkname: str


@dataclass(frozen=True, kw_only=True)
class MemberDiff:
    name: str
    what: str  # e.g. "size 10 != 12; sha256", "only in first"

    def __str__(self) -> str:
        return f"{self.name}: {self.what}"


def read_members(archive: Path) -> dict[str, Member]:
    members: dict[str, Member] = {}
    with archive.open("rb") as raw:
        stream = zstandard.ZstdDecompressor().stream_reader(raw)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                digest = ""
                if info.isfile():
                    handle = tar.extractfile(info)
                    assert handle is not None
                    hasher = hashlib.sha256()
                    while chunk := handle.read(1 << 20):
                        hasher.update(chunk)
                    digest = hasher.hexdigest()
                members[info.name] = Member(
                    type=info.type.decode(), size=info.size, sha256=digest, mode=info.mode,
                    mtime=int(info.mtime), linkname=info.linkname,
                )  # fmt: skip
    return members


def compare_archives(first: Path, second: Path) -> list[MemberDiff]:
    return compare_members(read_members(first), read_members(second))


def compare_members(a: dict[str, Member], b: dict[str, Member]) -> list[MemberDiff]:
    diffs: list[MemberDiff] = []
    for name in sorted(a.keys() | b.keys()):
        if name not in b:
            diffs.append(MemberDiff(name=name, what="only in the first archive"))
        elif name not in a:
            diffs.append(MemberDiff(name=name, what="only in the second archive"))
        else:
            x, y = a[name], b[name]
            parts = []
            if x.type != y.type:
                parts.append(f"type {x.type} != {y.type}")
            if x.size != y.size:
                parts.append(f"size {x.size} != {y.size}")
            if x.sha256 != y.sha256 and x.size == y.size:
                parts.append("content (same size)")
            elif x.sha256 != y.sha256:
                parts.append("content")
            if x.mode != y.mode:
                parts.append(f"mode {x.mode:o} != {y.mode:o}")
            if x.mtime != y.mtime:
                parts.append(f"mtime {x.mtime} != {y.mtime}")
            if x.linkname != y.linkname:
                parts.append(f"link {x.linkname} != {y.linkname}")
            if parts:
                diffs.append(MemberDiff(name=name, what="; ".join(parts)))
    return diffs
