"""Compare two archives member by member: what differs between two builds of one cell.

Streams both archives through orchestrator/safearchive.py (never whole in memory, every
member checked, every size bounded) and reports, per member, which of size, content hash,
mode, mtime, link target or type differ, plus members only in one of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import VerificationError
from orchestrator.safearchive import READ_ERRORS, open_archive
from orchestrator.safetar import RUNTIME_LIMITS, Limits


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


def read_members(archive: Path, *, limits: Limits = RUNTIME_LIMITS) -> dict[str, Member]:
    """Every member by its stored name ("./bin/python3"). UnsafeArchiveError when a member
    could escape or a limit is exceeded; VerificationError when the file is damaged."""
    members: dict[str, Member] = {}
    try:
        with open_archive(archive, limits=limits) as reader:
            for entry in reader:
                info = entry.info
                digest = ""
                if info.isfile():
                    handle = reader.open(entry)
                    hasher = hashlib.sha256()
                    while chunk := handle.read(1 << 20):
                        hasher.update(chunk)
                    digest = hasher.hexdigest()
                members[info.name] = Member(
                    type=info.type.decode(), size=info.size, sha256=digest, mode=info.mode,
                    mtime=int(info.mtime), linkname=info.linkname,
                )  # fmt: skip
    except READ_ERRORS as exc:
        raise VerificationError(
            f"{archive}: cannot read the archive: {exc}",
            hint="is it a complete .tar.zst written by the farm?",
        ) from None
    return members


def compare_archives(
    first: Path, second: Path, *, limits: Limits = RUNTIME_LIMITS
) -> list[MemberDiff]:
    return compare_members(read_members(first, limits=limits), read_members(second, limits=limits))


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
