"""Read a runtime archive (.tar.zst) that may not be what the farm wrote: the one way every
reader goes through (the ELF audit, `verify`, `verify --rebuild`, the benchmarks).

The file is streamed, never unpacked: zstd with a bounded window (checked from the frame
header before anything is decompressed), then safetar.open_tar_stream (bounded headers, a
bounded total), then safetar.TreeRules on every member before the caller sees it. So an
archive that would escape the directory `tar -x` unpacks it into, or exhaust memory or disk
on the way, is refused with one line naming the archive and the member or the limit.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import zstandard

from orchestrator.errors import FileRefused, UnsafeArchiveError
from orchestrator.fsutil import BoundedFile, open_regular
from orchestrator.safetar import (
    RUNTIME_LIMITS,
    CountingReader,
    Limits,
    TreeRules,
    human,
    open_tar_stream,
)

# What a damaged or foreign file raises while read (FileRefused: not a regular file, missing,
# or over the size limit); callers turn these into their own error.
READ_ERRORS = (OSError, EOFError, tarfile.TarError, zstandard.ZstdError, FileRefused)
_FRAME_HEADER_MAX = 18  # bytes: zstd's largest frame header (RFC 8878, 3.1.1)
_SPECIAL_BITS = 0o7000  # setuid, setgid, sticky
_HINT = (
    "refused before anything was unpacked; the farm never writes such an archive: "
    "rebuild it, or find out where it came from"
)


@dataclass(frozen=True, kw_only=True)
class Entry:
    path: str  # normalised, relative to the archive's root: "bin/python3.13" ("" is the root)
    info: tarfile.TarInfo  # as stored: info.name may start with "./"


class ArchiveReader:
    """Iterate over the checked members, in order; `open` a regular file's data before
    moving on (the tar is a stream)."""

    def __init__(self, tar: tarfile.TarFile, rules: TreeRules, counter: CountingReader) -> None:
        self._tar = tar
        self._rules = rules
        self._counter = counter

    @property
    def bytes_read(self) -> int:
        """Uncompressed bytes read so far: never more than one past the limit."""
        return self._counter.count

    def __iter__(self) -> Iterator[Entry]:
        while (info := self._tar.next()) is not None:
            path = self._rules.check(info)
            if info.mode & _SPECIAL_BITS:
                # pack_tree writes 0755/0644 only; `tar -x` as root would keep these bits.
                raise UnsafeArchiveError(
                    f"member {path!r}: mode {info.mode & 0o7777:04o} has the setuid, setgid "
                    "or sticky bit"
                )
            yield Entry(path=path, info=info)

    def open(self, entry: Entry) -> IO[bytes]:
        """The data of a regular file: exactly its checked size, never more."""
        handle = self._tar.extractfile(entry.info)
        if handle is None:
            raise UnsafeArchiveError(f"member {entry.path!r}: not a regular file")
        return handle


@contextmanager
def open_archive(archive: Path, *, limits: Limits = RUNTIME_LIMITS) -> Iterator[ArchiveReader]:
    """Open `archive` for one pass. UnsafeArchiveError names the archive; a damaged file raises
    one of READ_ERRORS."""
    try:
        # A regular file (not /dev/zero, not a fifo), no larger than the tar it may hold.
        with open_regular(archive, limit=limits.total_bytes) as raw:
            _check_frame(raw, limits)
            # The zstandard stubs want IO[bytes]; the reader only calls read() on it.
            stream = zstandard.ZstdDecompressor(max_window_size=limits.window_bytes).stream_reader(
                cast(IO[bytes], raw), read_across_frames=False
            )
            counter = CountingReader(stream, limit=limits.total_bytes)
            with open_tar_stream(counter, limits=limits) as tar:
                yield ArchiveReader(tar, TreeRules(top=None, limits=limits), counter)
    except UnsafeArchiveError as exc:
        raise UnsafeArchiveError(f"{archive}: {exc.message}", hint=_HINT) from None


def _check_frame(raw: BoundedFile, limits: Limits) -> None:
    """Refuse a frame whose window (the decoder's memory) or declared size is over the limits,
    from its header alone. Not a zstd frame at all is left to the decompressor's own error."""
    try:
        params = zstandard.get_frame_parameters(raw.read(_FRAME_HEADER_MAX))
    except zstandard.ZstdError:
        params = None
    raw.seek(0)
    if params is None:
        return
    if params.window_size > limits.window_bytes:
        raise UnsafeArchiveError(
            f"its zstd frame needs a {human(params.window_size)} window, over the limit of "
            f"{human(limits.window_bytes)}"
        )
    if params.content_size != zstandard.CONTENTSIZE_UNKNOWN and (
        params.content_size > limits.total_bytes
    ):
        raise UnsafeArchiveError(
            f"it declares {human(params.content_size)} uncompressed, over the limit of "
            f"{human(limits.total_bytes)}"
        )
