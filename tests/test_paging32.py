"""The page walker in the two 32-bit modes, on synthetic tables: PAE (3 levels, 8-byte
entries, a 32-byte-aligned PDPT in CR3) and 32-bit paging (2 levels, 4 MiB pages)."""

from __future__ import annotations

import struct

import pytest

from xenhpt.errors import MemoryReadError
from xenhpt.vmi.x86.paging import PageWalker, dtb_from_cr3, levels_from_registers

from .test_paging import FakeRam

P, PS = 1, 1 << 7
NX = 1 << 63


def entry32(ram: FakeRam, table: int, index: int, value: int) -> None:
    ram.write(table + 4 * index, struct.pack("<I", value))


@pytest.fixture()
def pae_ram() -> FakeRam:
    """A PDPT at 0x1020 (not page aligned, as Linux's per-mm PDPTs are) mapping the
    kernel's 0xc0000000 as a 2 MiB page and 0xc1234000 and user 0x08048000 as 4 KiB."""
    ram = FakeRam()
    pdpt, pd_kernel, pd_user, pt, pt_user = 0x1020, 0x2000, 0x3000, 0x4000, 0x6000
    ram.entry(pdpt, 3, pd_kernel | P)  # 0xc0000000..: PDPT entry 3
    ram.entry(pdpt, 0, pd_user | P)
    ram.entry(pd_kernel, 0, 0x20_0000 | P | PS | NX)  # 0xc0000000 -> 2 MiB at 0x200000
    ram.write(0x20_0000 + 0x1234, b"pae two-m page")
    ram.entry(pd_kernel, (0xC123_4000 >> 21) & 0x1FF, pt | P)
    ram.entry(pt, (0xC123_4000 >> 12) & 0x1FF, 0x1_2345_6000 | P | NX)  # above 4 GiB
    ram.write(0x1_2345_6000 + 0x10, b"high frame")
    ram.entry(pd_user, (0x0804_8000 >> 21) & 0x1FF, pt_user | P)
    ram.entry(pt_user, (0x0804_8000 >> 12) & 0x1FF, 0x7000 | P)
    ram.write(0x7000, b"user page")
    return ram


def test_pae_two_mib_page_ignores_nx_and_keeps_21_bits(pae_ram: FakeRam) -> None:
    walker = PageWalker(pae_ram.read, levels=3)
    assert walker.translate(0x1020, 0xC000_1234) == 0x20_1234
    assert walker.read(0x1020, 0xC000_1234, 14) == b"pae two-m page"


def test_pae_four_kib_page_reaches_frames_above_4_gib(pae_ram: FakeRam) -> None:
    walker = PageWalker(pae_ram.read, levels=3)
    assert walker.translate(0x1020, 0xC123_4010) == 0x1_2345_6010
    assert walker.read(0x1020, 0x0804_8000, 9) == b"user page"


def test_pae_cr3_keeps_bits_5_to_11_of_the_pdpt_address() -> None:
    assert dtb_from_cr3(0x1020 | 0x18, levels=3) == 0x1020  # PWT/PCD/low bits dropped
    assert dtb_from_cr3(0x1020, levels=4) == 0x1000  # (long mode: page-aligned table)


def test_pae_unmapped_quarter_raises_memory_read_error(pae_ram: FakeRam) -> None:
    walker = PageWalker(pae_ram.read, levels=3)
    with pytest.raises(MemoryReadError, match="not mapped"):
        walker.translate(0x1020, 0x4000_0000)  # PDPT entry 1 is empty


@pytest.fixture()
def flat_ram() -> FakeRam:
    """A 32-bit page directory at 0x1000: 0xc0000000 as a 4 MiB page at 0x400000,
    0xc0800000 as a PSE-36 4 MiB page above 4 GiB, 0x08048000 through a page table."""
    ram = FakeRam()
    pd, pt = 0x1000, 0x2000
    entry32(ram, pd, 0xC000_0000 >> 22, 0x40_0000 | P | PS)
    ram.write(0x40_0000 + 0x3_2100, b"four-m page")
    entry32(ram, pd, 0xC080_0000 >> 22, 0xC0_0000 | (0x1 << 13) | P | PS)  # bit 32 set
    ram.write(0x1_00C0_0000 + 0x10, b"pse-36")
    entry32(ram, pd, 0x0804_8000 >> 22, pt | P)
    entry32(ram, pt, (0x0804_8000 >> 12) & 0x3FF, 0x5000 | P)
    ram.write(0x5000 + 0x123, b"small page")
    return ram


def test_32bit_four_mib_page_keeps_the_low_22_bits(flat_ram: FakeRam) -> None:
    walker = PageWalker(flat_ram.read, levels=2)
    assert walker.translate(0x1000, 0xC003_2100) == 0x43_2100
    assert walker.read(0x1000, 0xC003_2100, 11) == b"four-m page"


def test_32bit_pse36_large_page_reaches_above_4_gib(flat_ram: FakeRam) -> None:
    walker = PageWalker(flat_ram.read, levels=2)
    assert walker.read(0x1000, 0xC080_0010, 6) == b"pse-36"


def test_32bit_four_kib_page_walks_two_tables(flat_ram: FakeRam) -> None:
    walker = PageWalker(flat_ram.read, levels=2)
    assert walker.read(0x1000, 0x0804_8123, 10) == b"small page"
    with pytest.raises(MemoryReadError, match="not mapped"):
        walker.translate(0x1000, 0x0804_9000)


def test_32bit_addresses_wrap_at_4_gib(flat_ram: FakeRam) -> None:
    walker = PageWalker(flat_ram.read, levels=2)
    # A sign-extended 64-bit spelling of a kernel address is the same 32-bit address.
    assert walker.translate(0x1000, 0xFFFF_FFFF_C003_2100) == 0x43_2100


@pytest.mark.parametrize(("registers", "levels"), [
    ({"cr0": 0x8000_0011, "cr4": 0x0000_0010, "efer": 0}, 2),          # PSE, no PAE
    ({"cr0": 0x8000_0011, "cr4": 0x0000_06B0, "efer": 0x800}, 3),      # PAE, NXE
    ({"cr0": 0x8005_0033, "cr4": 0x0000_06F0, "efer": 0xD01}, 4),      # LMA
    ({"cr0": 0x8005_0033, "cr4": 0x0000_16F0, "efer": 0xD01}, 5),      # LMA + LA57
    ({"cr0": 0x8005_0033, "cr4": 0x0000_06F0}, 4),                     # no EFER: long mode
])
def test_paging_mode_comes_from_cr4_and_efer(registers: dict[str, int], levels: int) -> None:
    assert levels_from_registers(registers) == levels
