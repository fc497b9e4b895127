"""x86 paging: guest-virtual to guest-physical, in Python.

The mode is named by its number of levels: 2 (32-bit paging, 4-byte entries, 4 MiB pages
with PSE), 3 (PAE: a 4-entry PDPT that CR3 points at, 32-byte aligned, then 8-byte
entries and 2 MiB pages), 4 and 5 (IA-32e paging, 4-level or with LA57). The CPU says
which through CR0.PG, CR4.PAE, EFER.LMA and CR4.LA57 (:func:`levels_from_registers`).

Used by every backend (live or snapshot), so it only needs a way to read
guest-physical memory. It knows the CPU's rules only: which page tables an OS
uses for what (Linux's KPTI pair: ``xenhpt/linux/kpti.py``) is the OS layer's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from ...errors import MemoryReadError

PAGE_SIZE = 0x1000
PAGE_MASK = ~(PAGE_SIZE - 1)
# Bits 12..51 of a table entry or CR3 are the physical frame.
_FRAME = 0x000F_FFFF_FFFF_F000
_PRESENT = 1 << 0
_PAGE_SIZE_BIT = 1 << 7
# The 8-byte-entry walks, top level first: (shift, index mask, may map a large page).
# Large pages exist only at the 1 GiB and 2 MiB levels; PAE's 4-entry PDPT maps none.
_LEVELS = {
    5: ((48, 0x1FF, False), (39, 0x1FF, False), (30, 0x1FF, True), (21, 0x1FF, True),
        (12, 0x1FF, False)),
    4: ((39, 0x1FF, False), (30, 0x1FF, True), (21, 0x1FF, True), (12, 0x1FF, False)),
    3: ((30, 0x3, False), (21, 0x1FF, True), (12, 0x1FF, False)),  # PAE
}
_LARGE_32 = 1 << 22
# CR3 low 12 bits are the PCID (with CR4.PCIDE) or PWT/PCD; bit 63 is "no flush" on writes.
_CR3_FRAME = _FRAME

ReadPhysical = Callable[[int, int], bytes]


def dtb_from_cr3(cr3: int, levels: int = 4) -> int:
    """The physical address of the top-level table that ``cr3`` points to (with PAE, the
    PDPT: 32-byte aligned, so CR3 bits 5..11 are address too)."""
    if levels == 3:
        return cr3 & _CR3_PDPT
    if levels == 2:
        return cr3 & 0xFFFF_F000
    return cr3 & _CR3_FRAME


CR0_PG = 1 << 31
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
EFER_LMA = 1 << 10
_CR3_PDPT = 0xFFFF_FFE0


def levels_from_cr4(cr4: int) -> int:
    """4-level paging, or 5-level when the guest set CR4.LA57 (a guest in long mode)."""
    return 5 if cr4 & CR4_LA57 else 4


def levels_from_registers(registers: dict[str, int]) -> int:
    """The paging mode of a vCPU: 2, 3, 4 or 5 levels (see the module doc).

    Without ``efer`` (a register set that lacks it) the vCPU is taken to be in long mode,
    as before 32-bit guests were known. A vCPU with paging off (``CR0.PG`` clear, seen
    only in early boot) is reported as 32-bit paging, which its tables will not match.
    """
    cr4 = registers["cr4"]
    if "efer" not in registers or registers["efer"] & EFER_LMA:
        return levels_from_cr4(cr4)
    return 3 if cr4 & CR4_PAE else 2


def canonical(address: int, levels: int = 4) -> int:
    """Sign-extend a 48-bit (57-bit with 5 levels) address; accepts negative ints too.
    In the 32-bit modes an address is its low 32 bits."""
    if levels <= 3:
        return address & 0xFFFF_FFFF
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

    def _entry(self, table: int, index: int, size: int = 8) -> int:
        raw = self._read_physical(table + index * size, size)
        return int.from_bytes(raw, "little")

    def translate(self, dtb: int, address: int) -> int:
        """Physical address of ``address`` in the tables at ``dtb``; MemoryReadError if unmapped."""
        address = canonical(address, self.levels)
        dtb = dtb_from_cr3(dtb, self.levels)
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
        if self.levels == 2:
            return self._walk_32(dtb, address)
        table = dtb
        for shift, index_mask, large in _LEVELS[self.levels]:
            try:
                entry = self._entry(table, (address >> shift) & index_mask)
            except MemoryReadError:
                raise MemoryReadError(address, "page table outside guest memory") from None
            if not entry & _PRESENT:
                raise MemoryReadError(address, "virtual address not mapped")
            if shift == 12:
                return entry & _FRAME, PAGE_SIZE
            if large and entry & _PAGE_SIZE_BIT:
                size = 1 << shift
                # A large frame is aligned to its size; PAT bit 12 is not address.
                return entry & _FRAME & ~(size - 1), size
            table = entry & _FRAME
        raise AssertionError("unreachable")

    def _table_entry(self, table: int, index: int, address: int) -> int:
        """A present 4-byte entry of 32-bit paging; MemoryReadError if absent."""
        try:
            entry = self._entry(table, index, 4)
        except MemoryReadError:
            raise MemoryReadError(address, "page table outside guest memory") from None
        if not entry & _PRESENT:
            raise MemoryReadError(address, "virtual address not mapped")
        return entry

    def _walk_32(self, directory: int, address: int) -> tuple[int, int]:
        """32-bit paging: directory (bits 31..22, 4 MiB pages with PSE), table (21..12).
        Linux enables CR4.PSE wherever the CPU has it, so a PS bit means a 4 MiB page."""
        pde = self._table_entry(directory, address >> 22, address)
        if pde & _PAGE_SIZE_BIT:
            # Bits 31..22 of the frame, and PSE-36's bits 39..32 in entry bits 20..13.
            return (pde & 0xFFC0_0000) | ((pde >> 13) & 0xFF) << 32, _LARGE_32
        pte = self._table_entry(pde & 0xFFFF_F000, (address >> 12) & 0x3FF, address)
        return pte & 0xFFFF_F000, PAGE_SIZE

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


class PagedMemory:
    """The virtual half of a ``Target`` for a backend that walks x86 page tables itself.

    Mixed into the backends (as Volatility 3 puts paging on the architecture layer): they
    set ``self.paging`` to a :class:`PageWalker` over their physical memory, and get the
    protocol's virtual reads, translations and paging mode from it.
    """

    paging: PageWalker

    def read_virtual(self, dtb: int, address: int, size: int) -> bytes:
        return self.paging.read(dtb, address, size)

    def translate(self, dtb: int, address: int) -> int:
        return self.paging.translate(dtb, address)

    @property
    def paging_levels(self) -> int | None:
        return self.paging.levels if self.paging.levels_known else None

    def set_kernel_paging(self, levels: int, kernel_tables: Callable[[int], int]) -> None:
        """The kernel's paging mode; ``kernel_tables`` matters only to a backend that
        places traps by physical address (it overrides this)."""
        self.paging.levels = levels

    def flush_translations(self) -> None:
        self.paging.flush()
