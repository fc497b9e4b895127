"""Snapshot files of every format, built here byte by byte: reads, holes, registers, corruption.

The builders follow the formats' own documents (QEMU target/i386/arch_dump.c, Xen
docs/misc/dump-core-format.txt and public/arch-x86/xen*.h, LiME's README), written out
with explicit offsets rather than reusing the reader's constants, so a wrong constant
in the reader fails here.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from xenhpt.errors import MemoryReadError, SnapshotError, XenhptError
from xenhpt.vmi.snapshot.target import SnapshotTarget, open_snapshot
from xenhpt.vmi.target import Target

PAGE = 4096
# Three pages at chosen physical addresses: two adjacent, then a hole, then one more.
PAGES = {0x1000: 0xA1, 0x2000: 0xB2, 0x5000: 0xC3}
HOLE = 0x3000


def page(address: int) -> bytes:
    """A page whose every byte says which page it is, with its address written at the start."""
    return struct.pack("<Q", address) + bytes([PAGES[address]]) * (PAGE - 8)


def runs() -> list[tuple[int, bytes]]:
    """PAGES as contiguous (physical, data) runs: [0x1000, 0x3000) and [0x5000, 0x6000)."""
    return [(0x1000, page(0x1000) + page(0x2000)), (0x5000, page(0x5000))]


# --- builders ---------------------------------------------------------------------------------

def note(name: bytes, n_type: int, desc: bytes) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + bytes(-len(b) % 4)
    return struct.pack("<III", len(name) + 1, len(desc), n_type) + pad(name + b"\0") + pad(desc)


def elf_header(e_type: int = 4, phoff: int = 0, phnum: int = 0, shoff: int = 0,
               shnum: int = 0, shstrndx: int = 0, machine: int = 62) -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    return struct.pack("<16sHHIQQQIHHHHHH", ident, e_type, machine, 1, 0, phoff, shoff, 0,
                       64, 56, phnum, 64, shnum, shstrndx)


def prstatus(regs: dict[str, int]) -> bytes:
    order = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
             "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
             "gs_base", "ds", "es", "fs", "gs")
    return bytes(112) + struct.pack("<27Q", *(regs.get(n, 0) for n in order)) + bytes(8)


def qemu_cpu_state(regs: dict[str, int], with_kernel_gs_base: bool = True) -> bytes:
    size = 440 if with_kernel_gs_base else 432
    out = struct.pack("<II", 1, size)
    out += struct.pack("<18Q", *(regs.get(n, 0) for n in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15", "rip", "eflags")))
    bases = {"fs": regs.get("fs_base", 0), "gs": regs.get("gs_base", 0)}
    for seg in ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt"):
        out += struct.pack("<IIIIQ", regs.get(seg, 0), 0xFFFFFFFF, 0, 0, bases.get(seg, 0))
    out += struct.pack("<5Q", regs.get("cr0", 0), 0, regs.get("cr2", 0), regs.get("cr3", 0),
                       regs.get("cr4", 0))
    if with_kernel_gs_base:
        out += struct.pack("<Q", regs.get("k_gs_base", 0))
    return out


# Every register these formats carry (all but cr8 and efer), each with its own value.
VCPU0 = {name: 0x1000 + 8 * number for number, name in enumerate(
    ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
     "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"))}
VCPU0.update(rip=0xFFFFFFFF81000123, eflags=0x246, cs=0x10, ss=0x18, ds=0x2B, es=0x2B, fs=0x63,
             gs=0x6B, fs_base=0x7F00, gs_base=0xFFFF888000001000, k_gs_base=0x7E00,
             cr0=0x80050033, cr2=0x1234, cr3=0x7000, cr4=0x3506F0)
VCPU1 = dict(VCPU0, rax=0x99, rip=0xFFFFFFFF81000456, cr3=0x7000 | 0x5)


def qemu_elf(segments: list[tuple[int, bytes]], vcpus: list[dict[str, int]],
             kernel_gs_base: bool = True) -> bytes:
    notes = b"".join(note(b"CORE", 1, prstatus(v)) for v in vcpus)
    notes += b"".join(note(b"QEMU", 0, qemu_cpu_state(v, kernel_gs_base)) for v in vcpus)
    phnum = 1 + len(segments)
    offset = 64 + 56 * phnum
    phdrs = struct.pack("<IIQQQQQQ", 4, 0, offset, 0, 0, len(notes), len(notes), 0)
    offset += len(notes)
    body = b""
    for physical, data in segments:
        phdrs += struct.pack("<IIQQQQQQ", 1, 0, offset + len(body), 0, physical,
                             len(data), len(data), 0)
        body += data
    return elf_header(phoff=64, phnum=phnum) + phdrs + notes + body


def xen_context(regs: dict[str, int], gs_base_kernel: int, gs_base_user: int) -> bytes:
    """One x86_64 vcpu_guest_context_t (5168 bytes) at the offsets of xen-x86_64.h."""
    ctx = bytearray(5168)
    user_regs = 520  # after fpu_ctxt[512] and flags
    for name, at in (("r15", 0), ("r14", 8), ("r13", 16), ("r12", 24), ("rbp", 32),
                     ("rbx", 40), ("r11", 48), ("r10", 56), ("r9", 64), ("r8", 72),
                     ("rax", 80), ("rcx", 88), ("rdx", 96), ("rsi", 104), ("rdi", 112),
                     ("rip", 128), ("eflags", 144), ("rsp", 152)):
        struct.pack_into("<Q", ctx, user_regs + at, regs.get(name, 0))
    for name, at in (("cs", 136), ("ss", 160), ("es", 168), ("ds", 176), ("fs", 184),
                     ("gs", 192)):
        struct.pack_into("<H", ctx, user_regs + at, regs.get(name, 0))
    ctrlreg = 4984  # after trap_ctxt[256], ldt, gdt_frames[16], gdt_ents, kernel_ss/sp
    for number in (0, 2, 3, 4):
        struct.pack_into("<Q", ctx, ctrlreg + 8 * number, regs.get(f"cr{number}", 0))
    struct.pack_into("<3Q", ctx, 5144, regs.get("fs_base", 0), gs_base_kernel, gs_base_user)
    return bytes(ctx)


def xen_core(frames: list[int], contents: list[bytes], contexts: list[bytes],
             magic: int = 0xF00FEBEE, table: str = ".xen_pfn", version: int = 1) -> bytes:
    """An ``xl dump-core`` file laid out as libxc writes it (pages page-aligned, strtab last)."""
    names = [b"", b".shstrtab", b".note.Xen", b".xen_prstatus", b".xen_pages", table.encode()]
    strtab = b"\0".join(names) + b"\0"
    name_at = [strtab.index(n + b"\0") if n else 0 for n in names]
    notes = (note(b"Xen", 0x2000000, b"")
             + note(b"Xen", 0x2000001, struct.pack("<4Q", magic, len(contexts), len(frames), PAGE))
             + note(b"Xen", 0x2000003, struct.pack("<Q", version)))
    prstatus_blob = b"".join(contexts)
    notes_at = 64 + 64 * len(names)
    prstatus_at = notes_at + len(notes)
    pages_at = -(-(prstatus_at + len(prstatus_blob)) // PAGE) * PAGE
    pages = b"".join(contents)
    pfn_entry = 16 if table == ".xen_p2m" else 8
    pfns = b"".join(struct.pack("<Q", f) + (bytes(8) if pfn_entry == 16 else b"")
                    for f in frames)
    pfn_at = pages_at + len(pages)
    strtab_at = pfn_at + len(pfns)

    def shdr(i: int, sh_type: int, offset: int, size: int, entsize: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name_at[i], sh_type, 0, 0, offset, size, 0, 0, 8,
                           entsize)

    shdrs = (bytes(64) + shdr(1, 3, strtab_at, len(strtab), 0)
             + shdr(2, 7, notes_at, len(notes), 0)
             + shdr(3, 1, prstatus_at, len(prstatus_blob), 5168)
             + shdr(4, 1, pages_at, len(pages), PAGE)
             + shdr(5, 1, pfn_at, len(pfns), pfn_entry))
    head = elf_header(shoff=64, shnum=len(names), shstrndx=1) + shdrs + notes + prstatus_blob
    return head + bytes(pages_at - len(head)) + pages + pfns + strtab


def lime(segments: list[tuple[int, bytes]]) -> bytes:
    return b"".join(struct.pack("<IIQQ8x", 0x4C694D45, 1, start, start + len(data) - 1) + data
                    for start, data in segments)


def raw() -> bytes:
    """Flat memory can have no holes inside: pages at 0, 0x1000 and 0x2000."""
    return bytes(PAGE) + page(0x1000) + page(0x2000)


def xen_of_pages(**kwargs: object) -> bytes:
    frames = sorted(PAGES)
    contexts = [xen_context(VCPU0, gs_base_kernel=0xFFFF888000001000, gs_base_user=0x7E00)]
    return xen_core([f >> 12 for f in frames], [page(f) for f in frames], contexts,
                    **kwargs)  # type: ignore[arg-type]


FORMATS = {
    "qemu-elf": lambda: qemu_elf(runs(), [VCPU0, VCPU1]),
    "xen-core": xen_of_pages,
    "lime": lambda: lime(runs()),
}


@pytest.fixture
def write(tmp_path: Path):
    def write(data: bytes, name: str = "snapshot.bin") -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path
    return write


# --- reading memory ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_pages_read_back_at_their_physical_addresses_and_holes_raise(write, fmt: str) -> None:
    with open_snapshot(write(FORMATS[fmt]())) as snapshot:
        assert snapshot.format == fmt
        for address in PAGES:
            assert snapshot.read_physical(address, PAGE) == page(address)
        # A read spanning the two adjacent pages, and one inside a page.
        assert snapshot.read_physical(0x1FF8, 16) == page(0x1000)[-8:] + page(0x2000)[:8]
        assert snapshot.read_physical(0x5010, 4) == bytes([0xC3]) * 4
        with pytest.raises(MemoryReadError):
            snapshot.read_physical(HOLE, 1)
        with pytest.raises(MemoryReadError):
            snapshot.read_physical(0x2FFF, 2)  # runs from the last page into the hole
        with pytest.raises(MemoryReadError):
            snapshot.read_physical(0x0, 8)  # below the first page
        with pytest.raises(MemoryReadError):
            snapshot.read_physical(0x6000, 1)  # past the end
        assert snapshot.physical_size == 0x6000
        assert snapshot.ranges == [(0x1000, 0x3000), (0x5000, 0x6000)]


def test_raw_is_flat_memory_and_ends_at_the_file_size(write) -> None:
    with open_snapshot(write(raw())) as snapshot:
        assert snapshot.format == "raw"
        assert snapshot.physical_size == 3 * PAGE
        assert snapshot.read_physical(0x1000, PAGE) == page(0x1000)
        assert snapshot.read_physical(0x2FF0, 16) == page(0x2000)[-16:]
        with pytest.raises(MemoryReadError):
            snapshot.read_physical(0x2FF0, 17)
        with pytest.raises(MemoryReadError):
            snapshot.read_physical(-1, 1)


def test_format_is_detected_by_content_not_by_file_name(write) -> None:
    assert open_snapshot(write(lime(runs()), "dump.elf")).format == "lime"
    assert open_snapshot(write(qemu_elf(runs(), [VCPU0]), "dump.raw")).format == "qemu-elf"
    assert open_snapshot(write(xen_of_pages(), "dump.lime")).format == "xen-core"
    assert open_snapshot(write(raw(), "dump.elf")).format == "raw"


def test_snapshot_target_satisfies_the_target_protocol(write) -> None:
    snapshot = open_snapshot(write(raw()))
    assert isinstance(snapshot, Target) and isinstance(snapshot, SnapshotTarget)
    assert snapshot.live is False


def test_overlapping_segments_read_from_the_lowest_one(write) -> None:
    # kdump's /proc/vmcore maps kernel text twice; both copies hold the same bytes.
    data = page(0x1000) + page(0x2000)
    path = write(qemu_elf([(0x1000, data), (0x2000, page(0x2000)), (0x1800, data[0x800:0x1800])],
                          [VCPU0]))
    with open_snapshot(path) as snapshot:
        assert snapshot.read_physical(0x1000, 2 * PAGE) == data
        assert snapshot.ranges == [(0x1000, 0x3000)]


def test_elf_segment_with_memory_not_in_the_file_is_a_hole(write) -> None:
    blob = bytearray(qemu_elf([(0x1000, page(0x1000))], [VCPU0]))
    # Program header 1 (PT_LOAD): keep p_filesz one page, claim p_memsz two.
    struct.pack_into("<Q", blob, 64 + 56 + 40, 2 * PAGE)
    with open_snapshot(write(bytes(blob))) as snapshot:
        assert snapshot.read_physical(0x1000, PAGE) == page(0x1000)
        with pytest.raises(MemoryReadError):
            snapshot.read_physical(0x2000, 1)


# --- vCPU registers ---------------------------------------------------------------------------

def test_qemu_elf_gives_each_vcpu_its_registers_from_prstatus_and_qemu_notes(write) -> None:
    with open_snapshot(write(qemu_elf(runs(), [VCPU0, VCPU1]))) as snapshot:
        assert snapshot.vcpu_count == 2
        assert snapshot.registers(0) == VCPU0
        assert snapshot.registers(1) == VCPU1
        with pytest.raises(XenhptError, match="no vCPU 2"):
            snapshot.registers(2)


def test_qemu_cpu_state_without_kernel_gs_base_still_gives_control_registers(write) -> None:
    with open_snapshot(write(qemu_elf(runs(), [VCPU0], kernel_gs_base=False))) as snapshot:
        registers = snapshot.registers(0)
        assert "k_gs_base" not in registers
        assert registers["cr3"] == VCPU0["cr3"] and registers["rip"] == VCPU0["rip"]


def test_xen_core_registers_undo_xens_kernel_and_user_gs_naming(write) -> None:
    user = dict(VCPU0, cs=0x33, rip=0x401000)
    contexts = [xen_context(VCPU0, gs_base_kernel=0xFFFF888000001000, gs_base_user=0x7E00),
                xen_context(user, gs_base_kernel=0xFFFF888000001000, gs_base_user=0x7E00)]
    path = write(xen_core([1, 2, 5], [page(0x1000), page(0x2000), page(0x5000)], contexts))
    with open_snapshot(path) as snapshot:
        assert snapshot.vcpu_count == 2
        kernel = snapshot.registers(0)
        assert kernel == VCPU0  # in ring 0 the current GS base is the kernel's
        in_user = snapshot.registers(1)
        assert (in_user["gs_base"], in_user["k_gs_base"]) == (0x7E00, 0xFFFF888000001000)
        assert in_user["rip"] == 0x401000 and in_user["cs"] == 0x33


@pytest.mark.parametrize("data", [raw, lambda: lime(runs())], ids=["raw", "lime"])
def test_formats_without_registers_have_one_vcpu_and_say_so(write, data) -> None:
    with open_snapshot(write(data())) as snapshot:
        assert snapshot.vcpu_count == 1
        with pytest.raises(XenhptError, match="this snapshot has no vCPU registers"):
            snapshot.registers(0)


def test_read_virtual_walks_the_page_tables_at_the_saved_cr3(write) -> None:
    # 4-level tables at 0x7000 (PML4), 0x8000 (PDPT), 0x9000 (PD), 0xA000 (PT) mapping
    # the kernel address 0xffffffff81000000 to physical 0x5000.
    va = 0xFFFFFFFF81000000
    tables = bytearray(4 * PAGE)
    idx = [(va >> shift) & 0x1FF for shift in (39, 30, 21, 12)]
    for level, (table, child) in enumerate(((0x7000, 0x8000), (0x8000, 0x9000),
                                            (0x9000, 0xA000), (0xA000, 0x5000))):
        struct.pack_into("<Q", tables, (table - 0x7000) + 8 * idx[level], child | 0x3)
    path = write(qemu_elf(runs() + [(0x7000, bytes(tables))], [VCPU0]))
    with open_snapshot(path) as snapshot:
        cr3 = snapshot.registers(0)["cr3"]
        assert snapshot.paging_levels == 4
        assert snapshot.read_virtual(cr3, va + 0x10, 4) == bytes([0xC3]) * 4
        with pytest.raises(MemoryReadError):
            snapshot.read_virtual(cr3, va + PAGE, 1)  # next page: not mapped


def test_five_level_paging_is_chosen_from_the_saved_cr4(write) -> None:
    la57 = dict(VCPU0, cr4=VCPU0["cr4"] | 1 << 12)
    with open_snapshot(write(qemu_elf(runs(), [la57]))) as snapshot:
        assert snapshot.paging_levels == 5


@pytest.mark.parametrize("call", [
    lambda s: s.pause(), lambda s: s.resume(), lambda s: s.insert_breakpoint(0xFFFF0000),
    lambda s: s.remove_breakpoint(0xFFFF0000), lambda s: s.wait_for_trap(1.0),
    lambda s: s.write_register(0, "rax", 1),
], ids=["pause", "resume", "insert_breakpoint", "remove_breakpoint", "wait_for_trap",
        "write_register"])
def test_trap_methods_say_a_snapshot_cannot_do_that(write, call) -> None:
    with open_snapshot(write(qemu_elf(runs(), [VCPU0]))) as snapshot:
        with pytest.raises(XenhptError, match="a snapshot cannot"):
            call(snapshot)


# --- LibVMI reader ----------------------------------------------------------------------------

def test_libvmi_reader_returns_the_same_bytes_as_mmap_for_raw(write) -> None:
    path = write(raw())
    with open_snapshot(path) as ours, open_snapshot(path, reader="libvmi") as libvmi:
        for address, size in ((0, PAGE), (0x1000, PAGE), (0x1FF8, 16), (0x2FFF, 1)):
            assert libvmi.read_physical(address, size) == ours.read_physical(address, size)
        assert libvmi.physical_size == ours.physical_size
        with pytest.raises(MemoryReadError):
            libvmi.read_physical(0x2FFF, 2)


def test_libvmi_reader_refuses_formats_other_than_raw(write) -> None:
    with pytest.raises(SnapshotError, match="only raw"):
        open_snapshot(write(lime(runs())), reader="libvmi")


# --- corrupt and unusable files ---------------------------------------------------------------

def error_of(path: Path, **kwargs: object) -> str:
    with pytest.raises(SnapshotError) as caught:
        open_snapshot(path, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_missing_empty_and_directory_paths_are_snapshot_errors(tmp_path: Path, write) -> None:
    assert "No such file" in error_of(tmp_path / "nope.raw")
    assert "empty" in error_of(write(b""))
    assert "directory" in error_of(tmp_path)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_truncated_files_are_snapshot_errors(write, fmt: str) -> None:
    blob = FORMATS[fmt]()
    for cut in (len(blob) - 1, len(blob) - PAGE // 2, len(blob) // 2, 100, 40):
        message = error_of(write(blob[:cut]))
        assert "truncated" in message or "past" in message, message


def test_elf_segment_past_end_of_file_names_the_segment(write) -> None:
    blob = bytearray(qemu_elf(runs(), [VCPU0]))
    struct.pack_into("<Q", blob, 64 + 2 * 56 + 8, len(blob))  # PT_LOAD 2's p_offset
    message = error_of(write(bytes(blob)))
    assert "memory segment 2 (physical 0x5000" in message and "truncated" in message


@pytest.mark.parametrize(("patch", "expected"), [
    ((4, b"\x01"), "32-bit ELF"),
    ((16, struct.pack("<H", 2)), "not a core dump"),
    ((18, struct.pack("<H", 183)), "only x86"),
    ((56, struct.pack("<H", 0xFFFF)), "PN_XNUM"),
    ((54, struct.pack("<H", 8)), "program header size 8"),
])
def test_bad_elf_headers_are_snapshot_errors(write, patch, expected: str) -> None:
    blob = bytearray(qemu_elf(runs(), [VCPU0]))
    at, value = patch
    blob[at : at + len(value)] = value
    assert expected in error_of(write(bytes(blob)))


def test_note_running_past_its_segment_is_a_snapshot_error(write) -> None:
    blob = bytearray(qemu_elf(runs(), [VCPU0]))
    notes_at = 64 + 56 * 3
    struct.pack_into("<I", blob, notes_at + 4, 0x7FFF_FFFF)  # first note's descsz
    assert "runs past the end of its segment" in error_of(write(bytes(blob)))


def test_unknown_qemu_cpu_state_version_is_a_snapshot_error(write) -> None:
    blob = bytearray(qemu_elf(runs(), [VCPU0]))
    at = blob.index(b"QEMU\0\0\0\0") + 8
    struct.pack_into("<I", blob, at, 2)
    assert "version 2" in error_of(write(bytes(blob)))


def test_lime_bad_magic_version_and_reversed_range_are_snapshot_errors(write) -> None:
    good = lime(runs())
    second = 32 + 2 * PAGE  # the second range header
    for at, value, expected in ((second, b"XXXX", "LiME range header 1 at offset 0x2020 has bad "
                                 "magic"), (4, struct.pack("<I", 2), "version 2"),
                                (8, struct.pack("<Q", 0x9000), "ends (0x2fff) before it starts")):
        blob = bytearray(good)
        blob[at : at + len(value)] = value
        assert expected in error_of(write(bytes(blob)))
    huge = struct.pack("<IIQQ8x", 0x4C694D45, 1, 0, (1 << 64) - 1)
    assert "52-bit" in error_of(write(huge))


def test_xen_dump_of_a_pv_guest_is_refused(write) -> None:
    message = error_of(write(xen_of_pages(table=".xen_p2m", magic=0xF00FEBED)))
    assert "PV guest" in message


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"magic": 0x12345678}, "bad magic 0x12345678"),
    ({"version": 1 << 32}, "format version 1.0 is not supported"),
])
def test_xen_header_problems_are_snapshot_errors(write, kwargs, expected: str) -> None:
    assert expected in error_of(write(xen_of_pages(**kwargs)))


def test_xen_absurd_page_count_is_a_snapshot_error(write) -> None:
    blob = bytearray(xen_of_pages())
    header = blob.index(struct.pack("<Q", 0xF00FEBEE))
    struct.pack_into("<Q", blob, header + 16, 1 << 60)  # xch_nr_pages
    assert "claims 1152921504606846976 pages" in error_of(write(bytes(blob)))


def test_xen_pages_the_dump_could_not_fill_are_holes(write) -> None:
    invalid = (1 << 64) - 1
    path = write(xen_core([1, invalid, 5], [page(0x1000), bytes(PAGE), page(0x5000)],
                          [xen_context(VCPU0, 0, 0)]))
    with open_snapshot(path) as snapshot:
        assert snapshot.ranges == [(0x1000, 0x2000), (0x5000, 0x6000)]
        assert snapshot.read_physical(0x5000, PAGE) == page(0x5000)


@pytest.mark.parametrize(("head", "expected"), [
    (b"\x1f\x8b\x08\x00", "gzip"), (b"KDUMP   ", "kdump-compressed"), (b"PAGEDU64", "Windows"),
    (b"QEVM\x00\x00\x00\x03", "savevm"), (b"\xfd7zXZ\x00", "xz"),
])
def test_compressed_and_foreign_formats_are_not_misread_as_raw(write, head: bytes,
                                                               expected: str) -> None:
    assert expected in error_of(write(head + bytes(PAGE)))


def test_unknown_reader_is_a_snapshot_error(write) -> None:
    assert "unknown snapshot reader" in error_of(write(raw()), reader="volatility")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_random_corruption_never_escapes_as_anything_but_snapshot_error(write, fmt: str) -> None:
    """Flip bytes in the headers and notes: every outcome is a clean open or a SnapshotError."""
    good = FORMATS[fmt]()
    rng = random.Random(f"snapshot-{fmt}")
    header_area = min(len(good), 0x1000)
    for _ in range(300):
        blob = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            blob[rng.randrange(header_area)] = rng.randrange(256)
        try:
            snapshot = open_snapshot(write(bytes(blob)))
        except SnapshotError:
            continue
        with snapshot:
            for start, end in snapshot.ranges:
                snapshot.read_physical(start, min(end - start, 64))
            for vcpu in range(snapshot.vcpu_count):
                try:
                    snapshot.registers(vcpu)
                except XenhptError as exc:
                    assert "no vCPU registers" in str(exc)
