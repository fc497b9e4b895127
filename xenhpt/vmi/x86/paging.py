"""x86-64 4- and 5-level paging: guest-virtual to guest-physical, in Python.

Used by every backend (live or snapshot), so it only needs a way to read
guest-physical memory. It knows the CPU's rules only: which page tables an OS
uses for what (Linux's KPTI pair: ``xenhpt/linux/kpti.py``) is the OS layer's.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable

from ...errors import MemoryReadError

PAGE_SIZE = 0x1000
PAGE_MASK = ~(PAGE_SIZE - 1)
# Bits 12..51 of a table entry or CR3 are the physical frame.
_FRAME = 0x000F_FFFF_FFFF_F000
_PRESENT = 1 << 0
_PAGE_SIZE_BIT = 1 << 7
# CR3 low 12 bits are the PCID (with CR4.PCIDE) or PWT/PCD; bit 63 is "no flush" on writes.
_CR3_FRAME = _FRAME

ReadPhysical = Callable[[int, int], bytes]


def dtb_from_cr3(cr3: int) -> int:
    """The physical address of the top-level table that ``cr3`` points to."""
    return cr3 & _CR3_FRAME


CR4_LA57 = 1 << 12


def levels_from_cr4(cr4: int) -> int:
    """4-level paging, or 5-level when the guest set CR4.LA57."""
    return 5 if cr4 & CR4_LA57 else 4


def canonical(address: int, levels: int = 4) -> int:
    """Sign-extend a 48-bit (57-bit with 5 levels) address; accepts negative ints too."""
    bits = 48 if levels == 4 else 57
    address &= 0xFFFF_FFFF_FFFF_FFFF
    low = (1 << bits) - 1
    if address & (1 << (bits - 1)):
        return address | (0xFFFF_FFFF_FFFF_FFFF & ~low)
    return address & low


class PageWalker:
    """Translate virtual addresses with a small cache of resolved pages.

    The cache maps (dtb, virtual page) to (physical page base, page size). It is
    only valid while the guest's page tables do not change: live backends call
    :meth:`flush` whenever the guest has run.
    """

    def __init__(self, read_physical: ReadPhysical, cache_size: int = 4096,
                 levels: int | None = 4) -> None:
        """``levels=None``: the paging mode is not known (a raw file has no CR4); walk
        4-level until the backend is told better (``Target.set_kernel_paging``)."""
        self._read_physical = read_physical
        self.levels = levels or 4
        self.levels_known = levels is not None
        self._cache: OrderedDict[tuple[int, int], tuple[int, int]] = OrderedDict()
        self._cache_size = cache_size

    def flush(self) -> None:
        self._cache.clear()

    def _entry(self, table: int, index: int) -> int:
        raw = self._read_physical(table + index * 8, 8)
        return struct.unpack("<Q", raw)[0]

    def translate(self, dtb: int, address: int) -> int:
        """Physical address of ``address`` in the tables at ``dtb``; MemoryReadError if unmapped."""
        address = canonical(address, self.levels)
        dtb = dtb_from_cr3(dtb)
        key = (dtb, address & PAGE_MASK)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            base, size = hit
            return base + (address & (size - 1))
        base, size = self._walk(dtb, address)
        self._cache[key] = (base, size)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return base + (address & (size - 1))

    def _walk(self, dtb: int, address: int) -> tuple[int, int]:
        table = dtb
        shifts = (48, 39, 30, 21, 12) if self.levels == 5 else (39, 30, 21, 12)
        for shift in shifts:
            try:
                entry = self._entry(table, (address >> shift) & 0x1FF)
            except MemoryReadError:
                raise MemoryReadError(address, "page table outside guest memory") from None
            if not entry & _PRESENT:
                raise MemoryReadError(address, "virtual address not mapped")
            if shift == 12:
                return entry & _FRAME, PAGE_SIZE
            # Large pages exist only at the 1 GiB and 2 MiB levels.
            if shift in (30, 21) and entry & _PAGE_SIZE_BIT:
                size = 1 << shift
                # A 1 GiB / 2 MiB frame is aligned to its size; PAT bit 12 is not address.
                return entry & _FRAME & ~(size - 1), size
            table = entry & _FRAME
        raise AssertionError("unreachable")

    def read(self, dtb: int, address: int, size: int) -> bytes:
        """Read ``size`` bytes that may cross page boundaries."""
        address = canonical(address, self.levels)
        out = bytearray()
        while size > 0:
            chunk = min(size, PAGE_SIZE - (address & (PAGE_SIZE - 1)))
            out += self._read_physical(self.translate(dtb, address), chunk)
            address = canonical(address + chunk, self.levels)
            size -= chunk
        return bytes(out)
