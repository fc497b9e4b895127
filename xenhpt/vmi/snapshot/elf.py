"""ELF memory snapshots: QEMU ``dump-guest-memory`` cores and Xen ``xl dump-core`` files.

Both are little-endian ELF64 ``ET_CORE`` files but lay memory out differently:

* QEMU (and kdump's /proc/vmcore): ``PT_LOAD`` program headers whose ``p_paddr``
  is guest-physical; a ``PT_NOTE`` with, per vCPU, an ``NT_PRSTATUS`` note
  ("CORE") and a "QEMU" note holding ``QEMUCPUState`` (layout from QEMU's
  target/i386/arch_dump.c: version, size, 16 GPRs, rip, rflags, ten
  ``{selector, limit, flags, pad, base}`` segments cs ds es fs gs ss ldt tr
  gdt idt, ``cr[5]``, then ``kernel_gs_base`` when ``size`` covers it).
* Xen (docs/misc/dump-core-format.txt): no program headers; sections
  ``.note.Xen`` (header note: magic, vCPU count, page count, page size),
  ``.xen_prstatus`` (one ``vcpu_guest_context`` per vCPU), ``.xen_pages`` and,
  for HVM/PVH guests, ``.xen_pfn``: page *i* of ``.xen_pages`` is frame
  ``xen_pfn[i]``. PV guests (``.xen_p2m``) are refused: their page tables hold
  machine frames, so no guest-virtual read could work.
"""

from __future__ import annotations

import mmap
import struct
import sys
from array import array
from collections.abc import Iterator

from ...errors import SnapshotError
from .memory import (
    MAX_VCPUS,
    Segment,
    SnapshotLayout,
    check_physical,
    check_within,
    unpack_at,
)

ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_ET_CORE = 4
_EM_386 = 3
_EM_X86_64 = 62
_PT_LOAD = 1
_PT_NOTE = 4
_PN_XNUM = 0xFFFF
_NT_PRSTATUS = 1

_EHDR = "<16sHHIQQQIHHHHHH"  # Elf64_Ehdr, 64 bytes
_PHDR = "<IIQQQQQQ"  # Elf64_Phdr, 56 bytes
_SHDR = "<IIQQQQIIQQ"  # Elf64_Shdr, 64 bytes
_NHDR = "<III"  # Elf64_Nhdr: namesz, descsz, type

# Bounds on counts the file controls (each far above anything a real dump holds).
MAX_PROGRAM_HEADERS = 1 << 20
MAX_SECTIONS = 4096
MAX_NOTES = 1 << 16
MAX_NOTE_SIZE = 1 << 20  # the notes we read are under 6 KiB
MAX_SECTION_NAME = 64

# --- QEMU notes -------------------------------------------------------------------------------

_GPR_ORDER = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_QEMU_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")
_QEMU_CPU_STATE_VERSION = 1
_QEMU_SEGMENT = "<IIIIQ"  # selector, limit, flags, pad, base
_QEMU_SEGMENTS_AT = 8 + 18 * 8
_QEMU_CR_AT = _QEMU_SEGMENTS_AT + len(_QEMU_SEGMENTS) * 24
_QEMU_KERNEL_GS_BASE_AT = _QEMU_CR_AT + 5 * 8

# x86_64 elf_prstatus: 112 bytes of header, then user_regs_struct in this order.
_PRSTATUS_REGS_AT = 112
_PRSTATUS_ORDER = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
                   "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags",
                   "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")
_PRSTATUS_X86_64_SIZE = _PRSTATUS_REGS_AT + len(_PRSTATUS_ORDER) * 8 + 8

# --- Xen dump-core ------------------------------------------------------------------------------

_XEN_NOTE_NAME = b"Xen"
_XEN_ELFNOTE_DUMPCORE_HEADER = 0x2000001
_XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION = 0x2000003
_XC_CORE_MAGIC_PV = 0xF00FEBED
_XC_CORE_MAGIC_HVM = 0xF00FEBEE
_XEN_PAGE_SIZE = 4096
_XEN_INVALID_PFN = (1 << 64) - 1
# x86_64 vcpu_guest_context (xen/include/public/arch-x86/xen.h, xen-x86_64.h):
# fpu_ctxt[512], flags, cpu_user_regs (200 bytes), trap_ctxt[256] (16 bytes each),
# ldt_base, ldt_ents, gdt_frames[16], gdt_ents, kernel_ss, kernel_sp, ctrlreg[8],
# debugreg[8], three callback eips, vm_assist, fs_base, gs_base_kernel, gs_base_user.
_XEN_USER_REGS_AT = 520
_XEN_USER_REGS = "<15QIIQHHBxxxQQH6xH6xH6xH6xH6x"
_XEN_USER_REGS_ORDER = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
                        "rax", "rcx", "rdx", "rsi", "rdi", "error_code", "entry_vector",
                        "rip", "cs", "_pad", "saved_upcall_mask", "eflags", "rsp",
                        "ss", "es", "ds", "fs", "gs")
_XEN_CTRLREG_AT = 4984
_XEN_SEGMENT_BASES_AT = 5144
_XEN_VCPU_CONTEXT_SIZE = 5168


def _parse_header(data: mmap.mmap) -> tuple[int, ...]:
    header = unpack_at(_EHDR, data, 0, "ELF header")
    ident, e_type, e_machine = header[0], header[1], header[2]
    if ident[4] != _ELFCLASS64:
        raise SnapshotError("32-bit ELF core: only ELF64 memory dumps are supported")
    if ident[5] != _ELFDATA2LSB:
        raise SnapshotError("big-endian ELF: not an x86 memory dump")
    if e_type != _ET_CORE:
        raise SnapshotError(f"ELF file of type {e_type}, not a core dump "
                            "(a kernel image or program rather than a memory snapshot?)")
    if e_machine not in (_EM_X86_64, _EM_386):
        raise SnapshotError(f"ELF core for machine {e_machine}: only x86 guests are supported")
    return header


def _section_headers(data: mmap.mmap, header: tuple[int, ...]) -> list[tuple[int, ...]]:
    e_shoff, e_shentsize, e_shnum = header[6], header[11], header[12]
    if e_shoff == 0 or e_shnum == 0:
        return []
    if e_shnum > MAX_SECTIONS:
        raise SnapshotError(f"absurd section count {e_shnum}")
    if e_shentsize < struct.calcsize(_SHDR):
        raise SnapshotError(f"section header size {e_shentsize} is too small")
    check_within(data, e_shoff, e_shnum * e_shentsize, "section header table")
    return [unpack_at(_SHDR, data, e_shoff + i * e_shentsize, f"section header {i}")
            for i in range(e_shnum)]


def _section_names(data: mmap.mmap, header: tuple[int, ...],
                   sections: list[tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    index = header[13]
    if not sections or index >= len(sections):
        return {}
    strtab_offset, strtab_size = sections[index][4], sections[index][5]
    check_within(data, strtab_offset, strtab_size, "section name table")
    named: dict[str, tuple[int, ...]] = {}
    for section in sections:
        if section[0] >= strtab_size:
            continue
        start = strtab_offset + section[0]
        end = data.find(b"\0", start, min(start + MAX_SECTION_NAME, strtab_offset + strtab_size))
        if end > start:
            named.setdefault(data[start:end].decode("ascii", "replace"), section)
    return named


def parse_elf(data: mmap.mmap) -> SnapshotLayout:
    """Describe an ELF core: a Xen dump-core if it has ``.xen_pages``, else PT_LOAD segments."""
    header = _parse_header(data)
    sections = _section_headers(data, header)
    named = _section_names(data, header, sections)
    if ".xen_pages" in named:
        return _parse_xen(data, named)
    return _parse_core(data, header, sections)


# --- QEMU / generic PT_LOAD cores --------------------------------------------------------------

def _program_headers(data: mmap.mmap, header: tuple[int, ...],
                     sections: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    e_phoff, e_phentsize, e_phnum = header[5], header[9], header[10]
    if e_phnum == _PN_XNUM:
        # More than 65534 segments: the real count is sh_info of section 0.
        if not sections:
            raise SnapshotError("program header count is PN_XNUM but there is no section 0")
        e_phnum = sections[0][7]
    if e_phnum > MAX_PROGRAM_HEADERS:
        raise SnapshotError(f"absurd program header count {e_phnum}")
    if e_phnum and e_phentsize < struct.calcsize(_PHDR):
        raise SnapshotError(f"program header size {e_phentsize} is too small")
    check_within(data, e_phoff, e_phnum * e_phentsize, "program header table")
    return [unpack_at(_PHDR, data, e_phoff + i * e_phentsize, f"program header {i}")
            for i in range(e_phnum)]


def _parse_core(data: mmap.mmap, header: tuple[int, ...],
                sections: list[tuple[int, ...]]) -> SnapshotLayout:
    segments: list[Segment] = []
    prstatus: list[dict[str, int]] = []
    qemu: list[dict[str, int]] = []
    for number, (p_type, _, p_offset, _, p_paddr, p_filesz, p_memsz, _) in enumerate(
            _program_headers(data, header, sections)):
        if p_type == _PT_LOAD:
            what = f"memory segment {number} (physical {p_paddr:#x}, {p_filesz:#x} bytes)"
            if p_filesz > p_memsz:
                raise SnapshotError(f"{what} stores more bytes than it maps ({p_memsz:#x})")
            check_physical(p_paddr, p_memsz, what)
            check_within(data, p_offset, p_filesz, what)
            # p_memsz beyond p_filesz was not dumped (QEMU writes p_filesz 0 for such
            # blocks): leave it a hole rather than invent zeros.
            segments.append(Segment(p_paddr, p_filesz, p_offset))
        elif p_type == _PT_NOTE:
            check_within(data, p_offset, p_filesz, f"note segment {number}")
            for name, n_type, desc in _notes(data, p_offset, p_filesz):
                if name == b"CORE" and n_type == _NT_PRSTATUS:
                    if len(desc) == _PRSTATUS_X86_64_SIZE:
                        prstatus.append(_prstatus_registers(desc))
                elif name == b"QEMU":
                    qemu.append(_qemu_registers(desc))
                if len(prstatus) > MAX_VCPUS or len(qemu) > MAX_VCPUS:
                    raise SnapshotError(f"more than {MAX_VCPUS} vCPU notes")
    if not segments:
        raise SnapshotError("ELF core without memory segments (no PT_LOAD)")
    # QEMU writes all NT_PRSTATUS notes, then all QEMU notes, both in vCPU order; the
    # QEMU note has everything NT_PRSTATUS has plus the control registers.
    registers = []
    for vcpu in range(max(len(prstatus), len(qemu))):
        merged = dict(prstatus[vcpu]) if vcpu < len(prstatus) else {}
        if vcpu < len(qemu):
            merged.update(qemu[vcpu])
        registers.append(merged)
    return SnapshotLayout("qemu-elf" if qemu else "elf-core", segments, registers)


def _notes(data: mmap.mmap | bytes, offset: int, size: int) -> Iterator[tuple[bytes, int, bytes]]:
    """Yield ``(name without NUL, type, descriptor bytes)`` for each note in a note area."""
    end = offset + size
    count = 0
    while offset + 12 <= end:
        namesz, descsz, n_type = unpack_at(_NHDR, data, offset, "note header")
        name_at = offset + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        next_at = desc_at + ((descsz + 3) & ~3)
        if desc_at + descsz > end:
            raise SnapshotError(f"note at offset {offset:#x} runs past the end of its segment")
        if descsz > MAX_NOTE_SIZE:
            raise SnapshotError(f"note at offset {offset:#x} claims an absurd {descsz} bytes")
        count += 1
        if count > MAX_NOTES:
            raise SnapshotError(f"more than {MAX_NOTES} notes")
        yield (bytes(data[name_at : name_at + namesz]).rstrip(b"\0"), n_type,
               bytes(data[desc_at : desc_at + descsz]))
        offset = next_at


def _prstatus_registers(desc: bytes) -> dict[str, int]:
    values = struct.unpack_from(f"<{len(_PRSTATUS_ORDER)}Q", desc, _PRSTATUS_REGS_AT)
    registers = dict(zip(_PRSTATUS_ORDER, values, strict=True))
    del registers["orig_rax"]
    return registers


def _qemu_registers(desc: bytes) -> dict[str, int]:
    if len(desc) < 8:
        raise SnapshotError("QEMU CPU-state note is too short")
    version, size = struct.unpack_from("<II", desc, 0)
    if version != _QEMU_CPU_STATE_VERSION:
        raise SnapshotError(f"QEMU CPU-state note version {version} is not understood "
                            f"(expected {_QEMU_CPU_STATE_VERSION})")
    if size < _QEMU_KERNEL_GS_BASE_AT or size > len(desc):
        raise SnapshotError(f"QEMU CPU-state note claims {size} bytes, note holds {len(desc)}")
    values = struct.unpack_from("<18Q", desc, 8)
    registers = dict(zip(_GPR_ORDER + ("rip", "eflags"), values, strict=True))
    segments = {}
    for number, name in enumerate(_QEMU_SEGMENTS):
        selector, _, _, _, base = struct.unpack_from(
            _QEMU_SEGMENT, desc, _QEMU_SEGMENTS_AT + number * 24)
        segments[name] = (selector, base)
    for name in ("cs", "ss", "ds", "es", "fs", "gs"):
        registers[name] = segments[name][0]
    registers["fs_base"] = segments["fs"][1]
    registers["gs_base"] = segments["gs"][1]
    cr = struct.unpack_from("<5Q", desc, _QEMU_CR_AT)
    registers.update(cr0=cr[0], cr2=cr[2], cr3=cr[3], cr4=cr[4])
    if size >= _QEMU_KERNEL_GS_BASE_AT + 8:  # a later addition, signalled only by size
        registers["k_gs_base"] = struct.unpack_from("<Q", desc, _QEMU_KERNEL_GS_BASE_AT)[0]
    return registers


# --- Xen dump-core ------------------------------------------------------------------------------

def _xen_section(data: mmap.mmap, named: dict[str, tuple[int, ...]], name: str) -> tuple[int, int]:
    section = named.get(name)
    if section is None:
        raise SnapshotError(f"Xen dump-core without a {name} section")
    offset, size = section[4], section[5]
    check_within(data, offset, size, f"section {name}")
    return offset, size


def _parse_xen(data: mmap.mmap, named: dict[str, tuple[int, ...]]) -> SnapshotLayout:
    if ".xen_pfn" not in named and ".xen_p2m" in named:
        raise SnapshotError("Xen dump-core of a PV guest (.xen_p2m): only HVM/PVH dumps are "
                            "supported, a PV guest's page tables hold machine frames")
    note_offset, note_size = _xen_section(data, named, ".note.Xen")
    header = None
    for name, n_type, desc in _notes(data, note_offset, note_size):
        if name != _XEN_NOTE_NAME:
            continue
        if n_type == _XEN_ELFNOTE_DUMPCORE_HEADER and len(desc) >= 32:
            header = struct.unpack_from("<4Q", desc)
        elif n_type == _XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION and len(desc) >= 8:
            version = struct.unpack_from("<Q", desc)[0]
            if version >> 32 != 0:
                raise SnapshotError(f"Xen dump-core format version {version >> 32}."
                                    f"{version & 0xFFFF_FFFF} is not supported (only 0.x)")
    if header is None:
        raise SnapshotError("Xen dump-core without its header note in .note.Xen")
    magic, nr_vcpus, nr_pages, page_size = header
    if magic == _XC_CORE_MAGIC_PV:
        raise SnapshotError("Xen dump-core of a PV guest: only HVM/PVH dumps are supported")
    if magic != _XC_CORE_MAGIC_HVM:
        raise SnapshotError(f"Xen dump-core header has bad magic {magic:#x}")
    if page_size != _XEN_PAGE_SIZE:
        raise SnapshotError(f"Xen dump-core page size {page_size} (only 4096 is supported)")
    if not 0 < nr_vcpus <= MAX_VCPUS:
        raise SnapshotError(f"Xen dump-core claims {nr_vcpus} vCPUs")

    pages_offset, pages_size = _xen_section(data, named, ".xen_pages")
    pfn_offset, pfn_size = _xen_section(data, named, ".xen_pfn")
    if nr_pages * _XEN_PAGE_SIZE > pages_size or nr_pages * 8 > pfn_size:
        raise SnapshotError(f"Xen dump-core claims {nr_pages} pages but .xen_pages holds "
                            f"{pages_size // _XEN_PAGE_SIZE} and .xen_pfn {pfn_size // 8}")
    pfns = array("Q", data[pfn_offset : pfn_offset + nr_pages * 8])
    if sys.byteorder != "little":
        pfns.byteswap()
    segments = _pfn_runs(pfns, pages_offset)

    context_offset, context_size = _xen_section(data, named, ".xen_prstatus")
    entry_size = named[".xen_prstatus"][9] or (context_size // nr_vcpus)
    if entry_size < _XEN_VCPU_CONTEXT_SIZE or entry_size * nr_vcpus > context_size:
        raise SnapshotError(f".xen_prstatus holds {context_size} bytes: too small for "
                            f"{nr_vcpus} x86-64 vCPU contexts")
    registers = [_xen_registers(data, context_offset + vcpu * entry_size)
                 for vcpu in range(nr_vcpus)]
    return SnapshotLayout("xen-core", segments, registers)


def _pfn_runs(pfns: array, pages_offset: int) -> list[Segment]:
    """Coalesce the page-to-frame table into runs of consecutive frames stored consecutively."""
    segments: list[Segment] = []
    run_pfn = run_index = run_length = -1
    for index, pfn in enumerate(pfns):
        if pfn == _XEN_INVALID_PFN:  # a page the live dump could not fill
            continue
        if run_length > 0 and pfn == run_pfn + run_length and index == run_index + run_length:
            run_length += 1
            continue
        if run_length > 0:
            segments.append(Segment(run_pfn * _XEN_PAGE_SIZE, run_length * _XEN_PAGE_SIZE,
                                    pages_offset + run_index * _XEN_PAGE_SIZE))
        check_physical(pfn * _XEN_PAGE_SIZE, _XEN_PAGE_SIZE, f"page {index} of .xen_pages")
        run_pfn, run_index, run_length = pfn, index, 1
    if run_length > 0:
        segments.append(Segment(run_pfn * _XEN_PAGE_SIZE, run_length * _XEN_PAGE_SIZE,
                                pages_offset + run_index * _XEN_PAGE_SIZE))
    return segments


def _xen_registers(data: mmap.mmap, offset: int) -> dict[str, int]:
    regs = unpack_at(_XEN_USER_REGS, data, offset + _XEN_USER_REGS_AT, "vCPU context")
    registers = dict(zip(_XEN_USER_REGS_ORDER, regs, strict=True))
    for private in ("error_code", "entry_vector", "_pad", "saved_upcall_mask"):
        del registers[private]
    ctrlreg = unpack_at("<8Q", data, offset + _XEN_CTRLREG_AT, "vCPU control registers")
    registers.update(cr0=ctrlreg[0], cr2=ctrlreg[2], cr3=ctrlreg[3], cr4=ctrlreg[4])
    fs_base, gs_base_kernel, gs_base_user = unpack_at(
        "<3Q", data, offset + _XEN_SEGMENT_BASES_AT, "vCPU segment bases")
    registers["fs_base"] = fs_base
    # Xen names the two GS bases by owner (kernel/user); undo that to get the current
    # GS base and the swapgs shadow, as the CPU and our other backends see them.
    in_kernel = registers["cs"] & 3 == 0
    registers["gs_base"] = gs_base_kernel if in_kernel else gs_base_user
    registers["k_gs_base"] = gs_base_user if in_kernel else gs_base_kernel
    return registers
