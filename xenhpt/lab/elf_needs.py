"""What a dynamically linked ELF program needs to start: its loader and its libraries.

The 64-bit lab asks the host's ``ldd`` which files its strace needs; a 32-bit guest's
strace comes from Debian's i386 packages, which the host cannot run ``ldd`` on (no i386
loader installed), so the loader's path (``PT_INTERP``) and the library names
(``DT_NEEDED``) are read from the file itself. ELF32 and ELF64, little-endian (x86).

The files come from a download: every offset and count is checked against the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import LabError

_PT_LOAD, _PT_DYNAMIC, _PT_INTERP = 1, 2, 3
_DT_NULL, _DT_NEEDED, _DT_STRTAB = 0, 1, 5
# class -> (e_phoff, e_phentsize/e_phnum formats and offsets; program header; dynamic entry)
_LAYOUT = {
    1: {"phoff": ("<I", 0x1C), "phentsize": 0x2A, "phnum": 0x2C,
        # p_type, p_offset, p_vaddr, p_paddr, p_filesz
        "phdr": ("<IIIII", lambda t, off, va, _pa, size: (t, off, va, size)),
        "dyn": "<iI"},
    2: {"phoff": ("<Q", 0x20), "phentsize": 0x36, "phnum": 0x38,
        # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz
        "phdr": ("<IIQQQQ", lambda t, _f, off, va, _pa, size: (t, off, va, size)),
        "dyn": "<qQ"},
}
_MAX_PHNUM = 256
_MAX_DYNAMIC = 4096
_MAX_NAME = 4096


@dataclass(frozen=True)
class ElfNeeds:
    """The loader path (None for a static program) and the sonames, in DT_NEEDED order."""

    bits: int
    interpreter: str | None
    needed: tuple[str, ...]


def _unpack(fmt: str, data: bytes, offset: int, what: str) -> tuple[int, ...]:
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        raise LabError(f"ELF {what} at {offset:#x} lies outside the file")
    return struct.unpack_from(fmt, data, offset)


def _c_string(data: bytes, offset: int, what: str) -> str:
    if not 0 <= offset < len(data):
        raise LabError(f"ELF {what} at {offset:#x} lies outside the file")
    end = data.find(b"\0", offset, offset + _MAX_NAME)
    if end < 0:
        raise LabError(f"ELF {what} at {offset:#x} is not terminated")
    return data[offset:end].decode(errors="replace")


def read_needs(data: bytes) -> ElfNeeds:
    """The loader and libraries of the ELF program or library whose bytes are ``data``."""
    if data[:4] != b"\x7fELF" or len(data) < 0x40 or data[4] not in _LAYOUT or data[5] != 1:
        raise LabError("not a little-endian ELF file")
    layout = _LAYOUT[data[4]]
    phoff = _unpack(layout["phoff"][0], data, layout["phoff"][1], "e_phoff")[0]
    phentsize = _unpack("<H", data, layout["phentsize"], "e_phentsize")[0]
    phnum = min(_unpack("<H", data, layout["phnum"], "e_phnum")[0], _MAX_PHNUM)
    fmt, fields = layout["phdr"]
    headers = [fields(*_unpack(fmt, data, phoff + i * phentsize, "program header"))
               for i in range(phnum)]
    interpreter = None
    needed: list[str] = []
    for kind, offset, _, _ in headers:
        if kind == _PT_INTERP:
            interpreter = _c_string(data, offset, "PT_INTERP")
    dynamic = [(offset, size) for kind, offset, _, size in headers if kind == _PT_DYNAMIC]
    if dynamic:
        entries = _dynamic_entries(data, *dynamic[0], layout["dyn"])
        strtab = next((value for tag, value in entries if tag == _DT_STRTAB), None)
        names = [value for tag, value in entries if tag == _DT_NEEDED]
        if names and strtab is None:
            raise LabError("ELF has DT_NEEDED entries but no DT_STRTAB")
        if names:
            # DT_STRTAB is an address: the PT_LOAD segment holding it gives its file offset.
            base = _file_offset(headers, strtab)
            needed = [_c_string(data, base + name, "DT_NEEDED name") for name in names]
    return ElfNeeds(32 if data[4] == 1 else 64, interpreter, tuple(needed))


def _dynamic_entries(data: bytes, offset: int, size: int, fmt: str) -> list[tuple[int, int]]:
    step = struct.calcsize(fmt)
    entries = []
    for i in range(min(size // step, _MAX_DYNAMIC)):
        tag, value = _unpack(fmt, data, offset + i * step, "dynamic entry")
        if tag == _DT_NULL:
            break
        entries.append((tag, value))
    return entries


def _file_offset(headers: list[tuple[int, int, int, int]], address: int) -> int:
    for kind, offset, vaddr, size in headers:
        if kind == _PT_LOAD and vaddr <= address < vaddr + size:
            return offset + address - vaddr
    raise LabError(f"ELF address {address:#x} is in no loaded segment")
