"""A synthetic guest for unit tests of the ``linux`` readers: sparse memory, an ISF.

``SparseMemory`` is a Target whose virtual addresses are its physical ones (every dtb maps
everything that was written, page by page; the rest raises MemoryReadError), so a test
lays out kernel structures and user pages where it likes and breaks them at will.
``isf(structs, symbols)`` writes a minimal Volatility 3 ISF with the fields named.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from xenhpt.errors import MemoryReadError, MsrUnavailable
from xenhpt.linux.banner import Banner
from xenhpt.linux.kernel import Kernel, KernelLayout
from xenhpt.profile import Profile

PAGE = 4096


class SparseMemory:
    """Pages written by the test; any other address is unreadable."""

    live = False
    paging_levels = 4
    physical_size = 1 << 52

    vcpu_count = 1

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}
        self.msrs: dict[int, int] | None = None  # None: a target that cannot read MSRs

    def read_msr(self, vcpu: int, index: int) -> int:
        if self.msrs is None:
            raise MsrUnavailable("this synthetic guest has no MSRs")
        return self.msrs[index]

    def write(self, address: int, data: bytes) -> None:
        for i, byte in enumerate(data):
            page = self.pages.setdefault((address + i) & ~(PAGE - 1), bytearray(PAGE))
            page[(address + i) & (PAGE - 1)] = byte

    def u64(self, address: int, *values: int) -> None:
        self.write(address, struct.pack(f"<{len(values)}Q", *values))

    def u32(self, address: int, value: int) -> None:
        self.write(address, struct.pack("<I", value))

    def unmap(self, address: int) -> None:
        self.pages.pop(address & ~(PAGE - 1), None)

    def read_physical(self, address: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            page = self.pages.get(address & ~(PAGE - 1))
            if page is None:
                raise MemoryReadError(address)
            at = address & (PAGE - 1)
            chunk = min(size, PAGE - at)
            out += page[at : at + chunk]
            address += chunk
            size -= chunk
        return bytes(out)

    def read_virtual(self, dtb: int, address: int, size: int) -> bytes:
        return self.read_physical(address, size)

    def translate(self, dtb: int, address: int) -> int:
        self.read_physical(address, 1)
        return address

    def set_kernel_paging(self, levels: int, kernel_tables: object) -> None:
        pass


def _type(spec: str | tuple) -> dict:
    """"u64", "u32", "ptr", ("struct", name) or ("array", count)."""
    if spec == "ptr":
        return {"kind": "pointer", "subtype": {"kind": "base", "name": "void"}}
    if spec in ("u64", "u32"):
        return {"kind": "base", "name": "long unsigned int" if spec == "u64" else "unsigned int"}
    kind, arg = spec
    if kind == "struct":
        return {"kind": "struct", "name": arg}
    return {"kind": "array", "count": arg, "subtype": {"kind": "base",
                                                       "name": "long unsigned int"}}


def write_isf(path: Path, structs: dict[str, tuple[int, dict[str, tuple[int, object]]]],
              symbols: dict[str, int | dict], pointer_size: int = 8) -> Path:
    """``structs``: name -> (size, {field: (offset, type spec)}); ``symbols``: name ->
    address, or the ISF's whole symbol object (to give it a type); ``pointer_size`` 4 for
    an i386 kernel (pointers and unsigned long)."""
    isf = {
        "metadata": {"format": "6.2.0", "producer": {"name": "xenhpt-tests"}},
        "base_types": {"long unsigned int": {"kind": "int", "size": pointer_size,
                                             "signed": False, "endian": "little"},
                       "unsigned int": {"kind": "int", "size": 4, "signed": False,
                                        "endian": "little"},
                       "pointer": {"kind": "int", "size": pointer_size, "signed": False,
                                   "endian": "little"}},
        "user_types": {name: {"kind": "struct", "size": size, "fields": {
            field: {"offset": offset, "type": _type(spec)}
            for field, (offset, spec) in fields.items()}}
            for name, (size, fields) in structs.items()},
        "enums": {},
        "symbols": {name: value if isinstance(value, dict) else {"address": value}
                    for name, value in symbols.items()},
    }
    path.write_text(json.dumps(isf))
    return path


def kernel(memory: SparseMemory, isf: Path) -> Kernel:
    """A Kernel over ``memory`` with no slide and no page tables to find."""
    layout = KernelLayout(slide=0, dtb=0, banner=Banner("Linux version test", "test", 0))
    return Kernel(memory, Profile.load(isf, use_cache=False), layout)  # type: ignore[arg-type]
