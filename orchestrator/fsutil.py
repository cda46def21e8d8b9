"""Small filesystem helpers shared by the stages that write files atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from orchestrator.errors import OutputError


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable. Not every filesystem allows opening a
    directory, so this is best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, source: bytes | Path) -> None:
    """Write `source` (bytes, or a file to copy) to `path` so that readers only ever see the
    old file or the complete new one: temp file in the same directory, fsync, rename."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    except OSError as exc:
        raise OutputError(f"cannot create a file in {path.parent}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(source, bytes):
                out.write(source)
            else:
                with source.open("rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; nothing the farm writes is a secret
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def walk_tree(top: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """(path, name relative to `top` with '/', lstat) of everything below `top`: depth first,
    a directory before its contents, names sorted bytewise within a directory (GNU tar's
    --sort=name); symlinks are not followed.

    Iterative, with an explicit stack: an install tree comes out of an untrusted container,
    and one thousands of directories deep must not end in a RecursionError (os.walk, rglob
    and a recursive generator all stop near depth 1000). Raises OSError, with the path."""
    stack = [(iter(_sorted_children(top)), "")]
    while stack:
        children, above = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            continue
        st = child.stat(follow_symlinks=False)
        relative = above + child.name
        yield child.path, relative, st
        if stat.S_ISDIR(st.st_mode):
            stack.append((iter(_sorted_children(child.path)), relative + "/"))


def _sorted_children(directory: str) -> list[os.DirEntry[str]]:
    with os.scandir(directory) as it:
        return sorted(it, key=lambda entry: os.fsencode(entry.name))


def remove_tree(path: Path, *, ignore_errors: bool = False) -> None:
    """shutil.rmtree for trees a build container wrote: those may be deeper than rmtree's
    recursion allows (a RecursionError that ignore_errors does not cover); removed bottom-up
    from walk_tree's listing then."""
    try:
        shutil.rmtree(path, ignore_errors=ignore_errors)
        return
    except RecursionError:
        pass
    try:
        for child, _relative, st in reversed(list(walk_tree(os.fspath(path)))):
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(child)
            else:
                os.unlink(child)
        os.rmdir(path)
    except OSError:
        if not ignore_errors:
            raise
