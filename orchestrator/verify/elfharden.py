"""Hardening facts about one ELF file, as python-build-standalone's validation reads them.

Where each fact comes from (python-build-standalone src/validation.rs, `validate_elf`):

- executable stack: the PT_GNU_STACK program header and its PF_X flag; without the header the
  kernel and glibc assume an executable stack.
- W^X: no PT_LOAD segment both writable (PF_W) and executable (PF_X).
- RELRO: a PT_GNU_RELRO program header. Full RELRO is that plus BIND_NOW: DT_BIND_NOW, or
  DF_BIND_NOW in DT_FLAGS, or DF_1_NOW in DT_FLAGS_1 (`-z now` sets the last two).
- text relocations: DT_TEXTREL, or DF_TEXTREL in DT_FLAGS.
- stack protector: a reference to `__stack_chk_fail` (or `__stack_chk_fail_local`);
  fortification: an undefined `__*_chk` symbol (glibc's checked variants, `__memcpy_chk`...).

Program headers and the dynamic segment are what the loader reads, so they are read rather than
sections: they survive `--strip-all`. Only facts are gathered here; verify/runtime.py judges.
"""

from __future__ import annotations

from dataclasses import dataclass

from elftools.elf.constants import P_FLAGS
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_DT_FLAGS, ENUM_DT_FLAGS_1
from elftools.elf.sections import Symbol, SymbolTableSection

STACK_PROTECTOR_SYMBOLS = frozenset({"__stack_chk_fail", "__stack_chk_fail_local"})
_DF_BIND_NOW = ENUM_DT_FLAGS["DF_BIND_NOW"]
_DF_TEXTREL = ENUM_DT_FLAGS["DF_TEXTREL"]
_DF_1_NOW = ENUM_DT_FLAGS_1["DF_1_NOW"]


@dataclass(frozen=True, kw_only=True)
class ElfHardening:
    # ET_EXEC or ET_DYN: a linked file. The program-header facts only mean something there
    # (an object file such as config-X.Y/python.o has no program headers).
    linked: bool
    gnu_stack: bool  # a PT_GNU_STACK header exists
    exec_stack: bool  # PT_GNU_STACK has PF_X
    wx_load: bool  # some PT_LOAD is both writable and executable
    relro: bool  # a PT_GNU_RELRO header exists
    dynamic: bool  # a PT_DYNAMIC segment exists (BIND_NOW only applies then)
    bind_now: bool
    textrel: bool
    stack_protector: bool  # references __stack_chk_fail(_local)
    fortified: tuple[str, ...]  # undefined __*_chk symbols, sorted


def elf_hardening(elf: ELFFile) -> ElfHardening:
    """Read the hardening facts of `elf`."""
    gnu_stack = exec_stack = wx_load = relro = dynamic = bind_now = textrel = False
    symbols: list[Symbol] = []
    for segment in elf.iter_segments():
        kind = segment["p_type"]
        flags = int(segment["p_flags"])
        if kind == "PT_GNU_STACK":
            gnu_stack = True
            exec_stack = bool(flags & P_FLAGS.PF_X)
        elif kind == "PT_GNU_RELRO":
            relro = True
        elif kind == "PT_LOAD":
            both = P_FLAGS.PF_W | P_FLAGS.PF_X
            wx_load = wx_load or flags & both == both
        elif isinstance(segment, DynamicSegment):
            dynamic = True
            for tag in segment.iter_tags():
                name = tag.entry.d_tag
                value = int(tag.entry.d_val)
                if name == "DT_BIND_NOW":
                    bind_now = True
                elif name == "DT_FLAGS":
                    bind_now = bind_now or bool(value & _DF_BIND_NOW)
                    textrel = textrel or bool(value & _DF_TEXTREL)
                elif name == "DT_FLAGS_1":
                    bind_now = bind_now or bool(value & _DF_1_NOW)
                elif name == "DT_TEXTREL":
                    textrel = True
            symbols.extend(segment.iter_symbols())
    # An unstripped file also has .symtab (a static link's only table); read it too.
    symtab = elf.get_section_by_name(".symtab")
    if isinstance(symtab, SymbolTableSection):
        symbols.extend(symtab.iter_symbols())
    names = {s.name for s in symbols}
    fortified = {
        s.name
        for s in symbols
        if s["st_shndx"] == "SHN_UNDEF" and s.name.startswith("__") and s.name.endswith("_chk")
    }
    return ElfHardening(
        linked=elf["e_type"] in {"ET_EXEC", "ET_DYN"},
        gnu_stack=gnu_stack,
        exec_stack=exec_stack,
        wx_load=wx_load,
        relro=relro,
        dynamic=dynamic,
        bind_now=bind_now,
        textrel=textrel,
        stack_protector=not names.isdisjoint(STACK_PROTECTOR_SYMBOLS),
        fortified=tuple(sorted(fortified)),
    )
