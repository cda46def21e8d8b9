"""Read a runtime archive on the host: its members, ELF linkage, and build-host leftovers.

This module only gathers facts; orchestrator/verify/runtime.py judges them. The archive is streamed
through orchestrator/safearchive.py (zstd -> tar, one checked member at a time, every size
bounded); an ELF member is spooled to a temporary file because pyelftools needs to seek, so
memory stays bounded whatever the archive holds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import NoteSegment

from orchestrator.errors import VerificationError
from orchestrator.safearchive import READ_ERRORS, open_archive
from orchestrator.safetar import RUNTIME_LIMITS, Limits
from orchestrator.verify.elfharden import ElfHardening, elf_hardening

ELF_MAGIC = b"\x7fELF"
# Where recipe/build-cpython.sh unpacks and builds the sources: `mktemp -d /tmp/cpython.XXXXXX`
# in the first recipe, the fixed /tmp/python-build since builds are reproducible.
BUILD_PATH_MARKERS: tuple[bytes, ...] = (b"/tmp/cpython.", b"/tmp/python-build")
TEXT_SCAN_LIMIT = 1024 * 1024
_SPOOL_LIMIT = 8 * 1024 * 1024
_CHUNK = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class ElfInfo:
    name: str  # member name without "./", e.g. "bin/python3.13"
    machine: str  # e_machine, e.g. "EM_X86_64"
    needed: tuple[str, ...]
    rpath: tuple[str, ...]  # DT_RPATH entries
    runpath: tuple[str, ...]  # DT_RUNPATH entries
    has_symtab: bool
    hardening: ElfHardening
    # GNU_PROPERTY_X86_ISA_1_NEEDED of the file's NT_GNU_PROPERTY_TYPE_0 note (bits: baseline
    # 1, x86-64-v2 2, v3 4, v4 8), what `ld -z x86-64-vN` marks and glibc's loader checks
    # against the CPU; 0 without one.
    x86_isa_needed: int = 0


@dataclass(frozen=True, kw_only=True)
class ArchiveScan:
    members: tuple[str, ...]  # every member, without "./"
    elves: tuple[ElfInfo, ...]
    unreadable_elves: tuple[str, ...]  # ELF magic, but pyelftools could not parse it
    static_libs: tuple[str, ...]
    # (member, marker): non-ELF members under 1 MB that name the build directory
    build_path_hits: tuple[tuple[str, str], ...]
    # .pyc members whose header is not "unchecked hash" (flags 0b01): timestamp pycs carry
    # the source mtime and break both relocation-proof validity and reproducibility
    not_unchecked_pycs: tuple[str, ...] = ()


def scan_archive(
    archive: Path,
    *,
    build_path_markers: Sequence[bytes] = BUILD_PATH_MARKERS,
    limits: Limits = RUNTIME_LIMITS,
) -> ArchiveScan:
    """Stream through `archive` (.tar.zst) once and collect what the audit needs.
    UnsafeArchiveError when a member could escape or a limit is exceeded."""
    members: list[str] = []
    elves: list[ElfInfo] = []
    unreadable: list[str] = []
    static_libs: list[str] = []
    hits: list[tuple[str, str]] = []
    pycs: list[str] = []
    try:
        with open_archive(archive, limits=limits) as reader:
            for entry in reader:
                name, member = entry.path, entry.info
                if not name:
                    continue  # the root entry "./", if any
                members.append(name)
                if not member.isreg():
                    continue
                if name.endswith(".a"):
                    static_libs.append(name)
                handle = reader.open(entry)
                head = handle.read(4)
                if name.endswith(".pyc"):
                    # PEP 552 header: magic, then a little-endian flags word.
                    if int.from_bytes(handle.read(4), "little") != 0b01:
                        pycs.append(name)
                    continue
                if head == ELF_MAGIC:
                    info = _read_elf(name, head, handle)
                    if info is None:
                        unreadable.append(name)
                    else:
                        elves.append(info)
                elif member.size < TEXT_SCAN_LIMIT:
                    data = head + handle.read()
                    found = [m.decode() for m in build_path_markers if m in data]
                    if found:
                        hits.append((name, ", ".join(found)))
    except READ_ERRORS as exc:
        raise VerificationError(
            f"{archive}: cannot read the archive: {exc}",
            hint="is it a complete .tar.zst written by the farm?",
        ) from None
    return ArchiveScan(
        members=tuple(members),
        elves=tuple(elves),
        unreadable_elves=tuple(unreadable),
        static_libs=tuple(static_libs),
        build_path_hits=tuple(hits),
        not_unchecked_pycs=tuple(pycs),
    )


def _read_elf(name: str, head: bytes, handle: IO[bytes]) -> ElfInfo | None:
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_LIMIT) as spool:
        spool.write(head)
        while chunk := handle.read(_CHUNK):
            spool.write(chunk)
        spool.seek(0)
        try:
            return elf_info(name, ELFFile(spool))
        except Exception:  # pyelftools raises many kinds of error on malformed input
            return None


def elf_info(name: str, elf: ELFFile) -> ElfInfo:
    """Facts about one parsed ELF file."""
    needed: list[str] = []
    rpath: list[str] = []
    runpath: list[str] = []
    # The dynamic segment (not section): it is what the loader reads, and it survives even
    # when section headers are stripped.
    for segment in elf.iter_segments():
        if not isinstance(segment, DynamicSegment):
            continue
        for tag in segment.iter_tags():
            # pyelftools sets the string of these tags as a dynamic attribute.
            kind = tag.entry.d_tag
            if kind == "DT_NEEDED":
                needed.append(str(getattr(tag, "needed", "")))
            elif kind == "DT_RPATH":
                rpath.extend(p for p in str(getattr(tag, "rpath", "")).split(":") if p)
            elif kind == "DT_RUNPATH":
                runpath.extend(p for p in str(getattr(tag, "runpath", "")).split(":") if p)
    return ElfInfo(
        name=name,
        machine=str(elf["e_machine"]),
        needed=tuple(needed),
        rpath=tuple(rpath),
        runpath=tuple(runpath),
        has_symtab=elf.get_section_by_name(".symtab") is not None,
        hardening=elf_hardening(elf),
        x86_isa_needed=x86_isa_needed(elf),
    )


def x86_isa_needed(elf: ELFFile) -> int:
    """The GNU_PROPERTY_X86_ISA_1_NEEDED bits of `elf`'s property note (0 without one), read
    from the PT_NOTE segments the loader reads (they survive `--strip-all`)."""
    needed = 0
    for segment in elf.iter_segments():
        if not isinstance(segment, NoteSegment):
            continue
        for note in segment.iter_notes():
            if note["n_type"] != "NT_GNU_PROPERTY_TYPE_0":
                continue
            for prop in note["n_desc"]:
                if prop["pr_type"] == "GNU_PROPERTY_X86_ISA_1_NEEDED":
                    needed |= int(prop["pr_data"])
    return needed
