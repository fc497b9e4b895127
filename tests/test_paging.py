"""The x86-64 page walker on synthetic page tables: every page size, holes, PCID."""

from __future__ import annotations

import struct

import pytest

from xenhpt.errors import MemoryReadError
from xenhpt.vmi.x86.paging import PageWalker, canonical, dtb_from_cr3

P, PS = 1, 1 << 7


class FakeRam:
    """Sparse guest-physical memory that only holds what a test put there."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}

    def write(self, address: int, data: bytes) -> None:
        for i, byte in enumerate(data):
            page = self.pages.setdefault((address + i) & ~0xFFF, bytearray(4096))
            page[(address + i) & 0xFFF] = byte

    def entry(self, table: int, index: int, value: int) -> None:
        self.write(table + 8 * index, struct.pack("<Q", value))

    def read(self, address: int, size: int) -> bytes:
        out = bytearray()
        for a in range(address, address + size):
            page = self.pages.get(a & ~0xFFF)
            if page is None:
                raise MemoryReadError(a)
            out.append(page[a & 0xFFF])
        return bytes(out)


def indices(va: int) -> tuple[int, int, int, int]:
    return tuple((va >> s) & 0x1FF for s in (39, 30, 21, 12))  # type: ignore[return-value]


@pytest.fixture()
def ram() -> FakeRam:
    """PML4 at 0x1000 mapping one 4 KiB, one 2 MiB and one 1 GiB page."""
    ram = FakeRam()
    pml4, pdpt, pd, pt = 0x1000, 0x2000, 0x3000, 0x4000
    # 4 KiB page: 0xffffffff81000000 -> 0x5000
    a, b, c, d = indices(0xFFFF_FFFF_8100_0000)
    ram.entry(pml4, a, pdpt | P)
    ram.entry(pdpt, b, pd | P)
    ram.entry(pd, c, pt | P)
    ram.entry(pt, d, 0x5000 | P | (1 << 63))  # NX bit must not leak into the address
    ram.write(0x5000, b"four-k page")
    # 2 MiB page: 0xffffffff81200000 -> 0x40_0000
    _, _, c2, _ = indices(0xFFFF_FFFF_8120_0000)
    ram.entry(pd, c2, 0x40_0000 | P | PS)
    ram.write(0x40_0000 + 0x1234, b"two-m page")
    # 1 GiB page: 0x7f0000000000 (user half) -> 0x4000_0000
    a3, b3, _, _ = indices(0x7F00_0000_0000)
    ram.entry(pml4, a3, 0x6000 | P)
    ram.entry(0x6000, b3, 0x4000_0000 | P | PS)
    ram.write(0x4000_0000 + 0x12_3456, b"one-g page")
    return ram


def test_four_kib_page_translates_and_ignores_nx_bit(ram: FakeRam) -> None:
    walker = PageWalker(ram.read)
    assert walker.translate(0x1000, 0xFFFF_FFFF_8100_0004) == 0x5004
    assert walker.read(0x1000, 0xFFFF_FFFF_8100_0000, 11) == b"four-k page"


def test_two_mib_page_keeps_the_low_21_bits(ram: FakeRam) -> None:
    walker = PageWalker(ram.read)
    assert walker.read(0x1000, 0xFFFF_FFFF_8120_1234, 10) == b"two-m page"


def test_one_gib_page_keeps_the_low_30_bits(ram: FakeRam) -> None:
    walker = PageWalker(ram.read)
    assert walker.read(0x1000, 0x7F00_0012_3456, 10) == b"one-g page"


def test_not_present_entry_raises_memory_read_error(ram: FakeRam) -> None:
    walker = PageWalker(ram.read)
    with pytest.raises(MemoryReadError):
        walker.translate(0x1000, 0xFFFF_8880_0000_0000)
    with pytest.raises(MemoryReadError):
        walker.translate(0x1000, 0xFFFF_FFFF_8100_1000)  # next PTE is empty


def test_pcid_and_noflush_bits_of_cr3_are_ignored(ram: FakeRam) -> None:
    walker = PageWalker(ram.read)
    cr3 = 0x1000 | 0x5 | (1 << 63)
    assert dtb_from_cr3(cr3) == 0x1000
    assert walker.translate(cr3, 0xFFFF_FFFF_8100_0000) == 0x5000


def test_read_across_a_page_boundary_stitches_both_pages(ram: FakeRam) -> None:
    # Map the following virtual page to a non-adjacent physical page.
    _, _, _, d = indices(0xFFFF_FFFF_8100_1000)
    ram.entry(0x4000, d, 0x9000 | P)
    ram.write(0x5FFE, b"ab")
    ram.write(0x9000, b"cd")
    walker = PageWalker(ram.read)
    assert walker.read(0x1000, 0xFFFF_FFFF_8100_0FFE, 4) == b"abcd"


def test_canonical_sign_extends_and_accepts_negative_ints() -> None:
    assert canonical(0x0000_8000_0000_0000) == 0xFFFF_8000_0000_0000
    assert canonical(-0x7F00_0000) == 0xFFFF_FFFF_8100_0000


def test_cache_is_flushed_when_tables_change(ram: FakeRam) -> None:
    walker = PageWalker(ram.read)
    assert walker.translate(0x1000, 0xFFFF_FFFF_8100_0000) == 0x5000
    _, _, _, d = indices(0xFFFF_FFFF_8100_0000)
    ram.entry(0x4000, d, 0x7000 | P)
    assert walker.translate(0x1000, 0xFFFF_FFFF_8100_0000) == 0x5000  # cached
    walker.flush()
    assert walker.translate(0x1000, 0xFFFF_FFFF_8100_0000) == 0x7000


def test_five_level_paging_walks_one_more_table() -> None:
    ram = FakeRam()
    va = 0xFF11_0000_0000_1000  # an LA57 direct-map address
    shifts = (48, 39, 30, 21, 12)
    tables = [0x1000, 0x2000, 0x3000, 0x4000, 0x5000]
    for level, shift in enumerate(shifts):
        nxt = tables[level + 1] if level < 4 else 0x8000
        ram.entry(tables[level], (va >> shift) & 0x1FF, nxt | P)
    ram.write(0x8000, b"la57")
    walker = PageWalker(ram.read, levels=5)
    assert walker.read(0x1000, va, 4) == b"la57"
    assert canonical(0x0100_0000_0000_0000, levels=5) == 0xFF00_0000_0000_0000
    with pytest.raises(MemoryReadError):
        PageWalker(ram.read, levels=4).translate(0x1000, va)
