"""Small filesystem helpers: atomic writes, walking untrusted trees, and the one way the farm
reads a file it did not write itself (read_regular / open_regular)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from orchestrator.errors import FileRefused, OutputError

# A metadata record is ~10 KB (its largest part is the module list); 16 MiB is no record of ours.
MAX_RECORD_BYTES = 16 * 1024 * 1024


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


# --- reading files the farm did not write ------------------------------------------------------
#
# Every file the user names (matrix.yaml, --extra-ca, an archive and its record for `verify`,
# the pinned keys, what sits in the source cache or the artifacts directory, a file:// mirror)
# is read through here. The rule: it is a regular file, checked before it is opened (a fifo
# would block the open, /dev/zero never ends, /dev/stdin waits for a terminal); it is opened
# without blocking and checked again on the descriptor (so nothing swapped in between is
# read); and it is read with a size limit, checked against its size before reading and
# against what is actually read (a file that grows, or a /proc file whose size says 0).

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a fifo"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """'a regular file', 'a fifo', 'a character device', ... for an st_mode."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def _check(path: Path, st: os.stat_result, limit: int | None) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(path, f"is {file_kind(st.st_mode)}, not a regular file; not read")
    if limit is not None and st.st_size > limit:
        raise FileRefused(path, f"is {st.st_size} bytes, over the limit of {limit}; not read")


def check_regular(path: Path, *, limit: int | None = None) -> os.stat_result:
    """The stat of `path` (symlinks followed, as an open would) when it is a regular file of
    at most `limit` bytes; FileRefused otherwise (`missing` set when it does not exist)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileRefused(path, "no such file", missing=True) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise FileRefused(path, f"cannot read: {_reason(exc)}") from None
    _check(path, st, limit)
    return st


class BoundedFile:
    """A regular file open for reading that never yields more than `limit` bytes: reading
    past it raises FileRefused. Seekable (the archive reader peeks at the zstd header)."""

    def __init__(self, handle: BinaryIO, path: Path, limit: int | None) -> None:
        self._handle = handle
        self.path = path
        self.limit = limit

    def read(self, size: int = -1) -> bytes:
        if self.limit is None:
            return self._handle.read(size)
        room = self.limit + 1 - self._handle.tell()  # one byte more shows an excess
        data = self._handle.read(max(0, room) if size < 0 else min(size, max(0, room)))
        if self._handle.tell() > self.limit:
            raise FileRefused(self.path, f"grew past the limit of {self.limit} bytes; not read")
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def fileno(self) -> int:
        return self._handle.fileno()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> BoundedFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_regular(path: Path, *, limit: int | None) -> BoundedFile:
    """`path` open for reading if it is a regular file of at most `limit` bytes (None: any
    size, for callers that bound what they read themselves); FileRefused otherwise. The open
    never blocks and never makes a terminal the farm's."""
    check_regular(path, limit=limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileRefused(path, "no such file", missing=True) from None
    except OSError as exc:
        raise FileRefused(path, f"cannot read: {_reason(exc)}") from None
    try:
        _check(path, os.fstat(fd), limit)  # what was opened, if it changed after the check
        os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return BoundedFile(handle, path, limit)


def check_output_file(path: Path) -> None:
    """A file the user names for the farm to write (`--report`, $GITHUB_STEP_SUMMARY) must
    be a regular file or not exist yet: writing into a fifo blocks, and replacing a device
    node (as root) would break the machine. FileRefused otherwise; checked before the work
    starts, so a bad name does not cost the run."""
    try:
        check_regular(path)
    except FileRefused as exc:
        if not exc.missing:
            raise


def read_regular(path: Path, *, limit: int) -> bytes:
    """The whole of `path`, a regular file of at most `limit` bytes; FileRefused otherwise."""
    with open_regular(path, limit=limit) as handle:
        try:
            return handle.read()
        except OSError as exc:  # EIO, EISDIR on odd filesystems
            raise FileRefused(path, f"cannot read: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
