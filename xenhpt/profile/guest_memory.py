"""Build a profile from guest memory alone: a running kernel carries its BTF and kallsyms.

A Xen Dom0 operator has no copy of each domU's vmlinuz, and an examiner may hold a memory
image and nothing else. But a kernel built with CONFIG_DEBUG_INFO_BTF keeps its ``.BTF``
section loaded (it serves ``/sys/kernel/btf/vmlinux``), and every kernel keeps its kallsyms
tables (they serve ``/proc/kallsyms``): the same two things ``profile build --kernel`` reads
out of an image file. So:

1. The caller (``linux/kernel.py``) finds banners ("Linux version ...") in physical
   memory; the kernel's own lies in its ``.rodata``, next to the kallsyms tables and
   ``.BTF``. Read a window around it.
2. Decode kallsyms in that window (``kallsyms.py`` finds the tables by their structure).
   These are *run-time* addresses: ``kallsyms_relative_base`` is relocated at boot, so
   under KASLR they carry the slide.
3. The kernel image is physically contiguous, so one banner occurrence whose distance to
   ``init_task`` reads back ``swapper`` as its name fixes the physical address of
   ``_text``; every symbol's bytes can then be read from memory.
4. Find the BTF blob in the window: the ``0xeB9F`` magic with a header whose lengths fit,
   the largest that parses (module BTF is small and split).
5. Take the slide out (x86-64 links ``_text`` at ``LINK_TEXT``; KASLR moves it in 2 MiB
   steps within 1 GiB), so the result equals the ISF built from the image file, and
   assemble it like ``build.py`` does.

A kernel without BTF gets a ProfileError that says so and how to give a profile instead.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xenhpt.errors import MemoryReadError, ProfileError
from xenhpt.profile import btf as B
from xenhpt.profile.build import assemble_isf
from xenhpt.profile.kallsyms import KallsymsTable, decode_kallsyms
from xenhpt.vmi.target import PhysicalMemory

log = logging.getLogger(__name__)

# x86-64: _text at __START_KERNEL_map + CONFIG_PHYSICAL_START (16 MiB, every distribution).
LINK_TEXT = 0xFFFF_FFFF_8100_0000
KERNEL_MAP = 0xFFFF_FFFF_8000_0000  # addresses above this are in the kernel image
KASLR_ALIGN = 0x20_0000
KASLR_RANGE = 0x4000_0000
# .rodata (banner, kallsyms, .BTF) spans a few tens of MiB even in a generic kernel.
WINDOW_BEFORE = 16 << 20
WINDOW_AFTER = 64 << 20
MAX_WINDOWS = 4  # distinct places with a banner to try (the image, then copies)
BANNER_PREFIX = b"Linux version "
READ_CHUNK = 1 << 20


def _read_window(memory: PhysicalMemory, start: int, end: int) -> bytes:
    """Bytes of [start, end); pages that cannot be read are zeros (a hole, not the end)."""
    out = bytearray()
    for base in range(start, end, READ_CHUNK):
        size = min(READ_CHUNK, end - base)
        try:
            out += memory.read_physical(base, size)
        except MemoryReadError:
            out += bytes(size)
    return bytes(out)


def _find_btf(window: bytes) -> bytes | None:
    """The largest well-formed BTF blob in ``window`` that looks like a kernel's."""
    best: bytes | None = None
    pos = window.find(b"\x9f\xeb\x01\x00")
    while pos >= 0:
        if pos + 24 <= len(window):
            hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
                "<IIIII", window, pos + 4)
            total = hdr_len + max(type_off + type_len, str_off + str_len)
            if (hdr_len == 24 and type_off == 0 and str_off >= type_len and type_len > 0
                    and pos + total <= len(window) and (best is None or total > len(best))):
                best = window[pos:pos + total]
        pos = window.find(b"\x9f\xeb\x01\x00", pos + 1)
    return best


class GuestKernelBytes:
    """The kernel image as it lies in guest memory, read at link-time addresses."""

    def __init__(self, memory: PhysicalMemory, text_physical: int) -> None:
        self.memory = memory
        self.text_physical = text_physical

    def _physical(self, vaddr: int) -> int:
        if vaddr < LINK_TEXT:
            raise ProfileError(f"{vaddr:#x} is not in the kernel image")
        return self.text_physical + (vaddr - LINK_TEXT)

    def read(self, vaddr: int, size: int) -> bytes:
        try:
            return self.memory.read_physical(self._physical(vaddr), size)
        except MemoryReadError as exc:
            raise ProfileError(f"kernel bytes at {vaddr:#x}: {exc}") from None

    def read_cstring(self, vaddr: int, limit: int = 4096) -> bytes:
        data = self.read(vaddr, limit)
        end = data.find(b"\0")
        if end < 0:
            raise ProfileError(f"no NUL within {limit} bytes of {vaddr:#x}")
        return data[:end]


def _text_physical(memory: PhysicalMemory, window: bytes, window_start: int,
                   runtime: dict[str, int], comm_offset: int) -> int | None:
    """Physical address of ``_text``: the banner occurrence that puts ``swapper`` at
    ``init_task.comm`` (copies of the banner elsewhere do not)."""
    banner_delta = runtime["linux_banner"] - runtime["_text"]
    comm_delta = runtime["init_task"] + comm_offset - runtime["_text"]
    pos = window.find(BANNER_PREFIX)
    while pos >= 0:
        text = window_start + pos - banner_delta
        if text >= 0:
            try:
                if memory.read_physical(text + comm_delta, 7) == b"swapper":
                    return text
            except MemoryReadError:
                pass
        pos = window.find(BANNER_PREFIX, pos + 1)
    return None


def _slide(runtime_text: int) -> int:
    slide = runtime_text - LINK_TEXT
    if 0 <= slide < KASLR_RANGE and slide % KASLR_ALIGN == 0:
        return slide
    log.warning("_text at %#x is no KASLR slide of %#x: keeping run-time addresses",
                runtime_text, LINK_TEXT)
    return 0


def _link_time(table: KallsymsTable, slide: int) -> dict[str, int]:
    # Per-CPU symbols are offsets into the per-CPU area (absolute): KASLR does not move them.
    return {name: address - slide if address >= KERNEL_MAP else address
            for name, address in table.symbols().items()}


def _windows(memory: PhysicalMemory, banners: Iterable[int]) -> list[tuple[int, int]]:
    windows: list[tuple[int, int]] = []
    for address in banners:
        if any(start <= address < end for start, end in windows):
            continue
        windows.append((max(0, address - WINDOW_BEFORE) & ~0xFFF,
                        min(memory.physical_size, address + WINDOW_AFTER)))
        if len(windows) >= MAX_WINDOWS:
            break
    return windows


def build_profile_from_memory(memory: PhysicalMemory, banners: Iterable[int],
                              where: str) -> dict[str, Any]:
    """An ISF for the kernel in ``memory`` (a live guest, paused, or a snapshot), looking
    around the physical addresses of its ``banners`` ("Linux version ..."), first first."""
    windows = _windows(memory, banners)
    if not windows:
        raise ProfileError(f"{where}: no Linux kernel banner in memory: not a Linux guest, "
                           "or the memory is empty or corrupt")
    problems = []
    for start, end in windows:
        window = _read_window(memory, start, end)
        try:
            table = decode_kallsyms(window)
        except ProfileError as exc:
            problems.append(f"{start:#x}: {exc}")
            continue
        runtime = table.symbols()
        if not {"_text", "linux_banner", "init_task"} <= runtime.keys():
            problems.append(f"{start:#x}: kallsyms without _text/linux_banner/init_task")
            continue
        btf = _find_btf(window)
        if btf is None:
            raise ProfileError(
                f"{where}: the kernel keeps no BTF in memory (built without "
                "CONFIG_DEBUG_INFO_BTF): give a profile built from its image or debug "
                "vmlinux with --profile (xenhpt profile build --kernel IMAGE -o FILE)")
        parsed = B.parse_btf(btf, f"{where}: in-memory .BTF")
        comm = _comm_offset(parsed)
        text_physical = _text_physical(memory, window, start, runtime, comm)
        if text_physical is None:
            problems.append(f"{start:#x}: no banner here puts init_task where kallsyms says")
            continue
        slide = _slide(runtime["_text"])
        symbols = _link_time(table, slide)
        sources = {"symbols": [{"kind": "symtab", "name": f"{where}:kallsyms in memory"}],
                   "types": [{"kind": "dwarf", "name": f"{where}:.BTF in memory"}]}
        return assemble_isf(parsed, f"{where}: in-memory .BTF", symbols,
                            GuestKernelBytes(memory, text_physical), sources)
    raise ProfileError(f"{where}: found a banner but no kernel symbol tables around it: "
                       + "; ".join(problems[:3]))


def _comm_offset(parsed: B.Btf) -> int:
    """Byte offset of task_struct.comm (looking into anonymous members, as the ISF does)."""
    def search(type_id: int, base: int, depth: int) -> int | None:
        _, btf_type = parsed.strip(type_id)
        if btf_type is None or btf_type.kind not in (B.STRUCT, B.UNION) or depth > 8:
            return None
        for member in btf_type.members:
            if member.name == "comm":
                return base + member.bit_offset // 8
            if not member.name:
                found = search(member.type_id, base + member.bit_offset // 8, depth + 1)
                if found is not None:
                    return found
        return None

    for type_id in parsed.by_name("task_struct", (B.STRUCT,)):
        found = search(type_id, 0, 0)
        if found is not None:
            return found
    raise ProfileError("in-memory BTF has no task_struct.comm: not a Linux kernel's BTF?")


def cache_name(banner: str) -> str:
    """File name of a profile built from memory, keyed by the whole banner: two builds of
    one release (same version string, other build) never share a file."""
    release = banner.split(" ")[2] if banner.startswith("Linux version ") else "unknown"
    digest = hashlib.sha256(banner.rstrip("\n\0").encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in ".-_+" else "_" for c in release)[:64]
    return f"{safe}-{digest}.json"


def cache_path(banner: str, cache_dir: Path) -> Path:
    return cache_dir / "from-memory" / cache_name(banner)
