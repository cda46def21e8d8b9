"""Extract tar streams the farm does not trust (a build container's install tree).

Python's tarfile filters depend on the interpreter's patch level (3.11.7 here predates the
fixes for hard links chained through symlinks), so this module decides for itself, member by
member, before anything touches the disk:

- names are relative, without `..`, inside the one expected top directory, each given once;
- only regular files, directories, symlinks and hard links; no devices, fifos or sparse files;
- a symlink's target, resolved from its own directory, stays inside the tree (and is never
  absolute); a hard link points at a regular file extracted earlier from the same tar;
- no member is written through a symlink (every parent must be a directory member);
- files are created fresh (O_EXCL | O_NOFOLLOW), with setuid/setgid/sticky and group/other
  write bits dropped; ownership is the extracting user's;
- at most `max_bytes` of content and `max_members` members.

A refusal raises UnsafeArchiveError naming the member; the caller removes the destination.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from pathlib import Path

from orchestrator.errors import UnsafeArchiveError

DEFAULT_MAX_BYTES = 8 * 1024**3
DEFAULT_MAX_MEMBERS = 200_000
MAX_NAME_LENGTH = 4096
_CHUNK = 1024 * 1024


def member_path(name: str, *, top: str) -> str:
    """The member's normalised relative path; refuses absolute names, `..` and names outside
    `top`."""
    if not name or len(name) > MAX_NAME_LENGTH or "\0" in name:
        raise UnsafeArchiveError(f"member {name[:80]!r}: empty, NUL or over-long name")
    if name.startswith("/"):
        raise UnsafeArchiveError(f"member {name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"member {name!r}: '..' in its path")
    if not parts or parts[0] != top:
        raise UnsafeArchiveError(f"member {name!r}: outside the expected top directory {top}/")
    return "/".join(parts)


def _symlink_target(path: str, linkname: str, *, top: str) -> None:
    if not linkname or linkname.startswith("/") or len(linkname) > MAX_NAME_LENGTH:
        raise UnsafeArchiveError(f"member {path!r}: symlink to {linkname[:80]!r} (absolute)")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), linkname))
    if resolved != top and not resolved.startswith(top + "/"):
        raise UnsafeArchiveError(f"member {path!r}: symlink to {linkname!r} leaves the tree")


def extract_untrusted(
    tar: tarfile.TarFile,
    dest: Path,
    *,
    top: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> None:
    """Extract `tar` (opened for streaming or not) under `dest`, which must be empty."""
    (dest / top).mkdir(mode=0o755)
    kinds: dict[str, str] = {top: "dir"}  # path -> "dir" | "file" | "symlink"
    total = 0
    for count, member in enumerate(tar, start=1):
        if count > max_members:
            raise UnsafeArchiveError(f"more than {max_members} members")
        path = member_path(member.name, top=top)
        if path == top:
            if not member.isdir():
                raise UnsafeArchiveError(f"member {path!r}: the top is not a directory")
            os.chmod(dest / top, (member.mode & 0o755) | 0o700)
            continue
        if path in kinds:
            raise UnsafeArchiveError(f"member {path!r}: appears twice")
        parent = posixpath.dirname(path)
        if kinds.get(parent) != "dir":
            raise UnsafeArchiveError(
                f"member {path!r}: its parent {parent!r} is not a directory of the tar"
            )
        target = dest / path
        mode = member.mode & 0o755
        if member.isdir():
            target.mkdir(mode=0o700)
            os.chmod(target, mode | 0o700)
            kinds[path] = "dir"
        elif member.isreg() and not member.issparse():
            total += member.size
            if total > max_bytes:
                raise UnsafeArchiveError(
                    f"member {path!r}: the tree exceeds {max_bytes / 1024**3:.1f} GiB"
                )
            _write_file(tar, member, target, mode)
            kinds[path] = "file"
        elif member.issym():
            _symlink_target(path, member.linkname, top=top)
            os.symlink(member.linkname, target)
            kinds[path] = "symlink"
        elif member.islnk():
            try:
                source: str | None = member_path(member.linkname, top=top)
            except UnsafeArchiveError:
                source = None  # outside the tree: named below as the member's fault
            if source is None or kinds.get(source) != "file":
                raise UnsafeArchiveError(
                    f"member {path!r}: hard link to {member.linkname!r}, which is not a "
                    "regular file earlier in the tar"
                )
            os.link(dest / source, target, follow_symlinks=False)
            kinds[path] = "file"
        else:
            raise UnsafeArchiveError(f"member {path!r}: {_kind(member)} not allowed")
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
