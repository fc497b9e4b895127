"""A guest's Linux kernel: its profile, its KASLR slide, and typed reads of its memory.

This is the entry point of the ``linux`` layer: open a :class:`Kernel` on any
:class:`~xenhpt.vmi.target.Target` (live or snapshot) and read kernel objects
through it. Nothing here knows which backend is underneath.

How the slide is found without any vCPU register (so snapshots work too): the
profile's banner is searched in physical memory; ``init_top_pgt`` (i386:
``swapper_pg_dir``) lies a fixed distance from ``linux_banner`` in the same physically
contiguous image, which gives the kernel page tables; the virtual slide is then the
2 MiB-aligned shift for which those tables map ``linux_banner`` onto the banner we found.

Pointers are as wide as the profile says (4 bytes on i386, 8 on x86-64): read them
with :meth:`Kernel.pointer`, and tell kernel addresses with :meth:`Kernel.is_kernel_address`.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MemoryReadError, ProfileError
from ..profile import Profile, find_profile
from ..vmi.target import Target
from ..vmi.x86.paging import PageWalker
from .banner import Banner, find_banner, find_banners, iter_banners
from .kpti import kernel_dtb

log = logging.getLogger(__name__)

# Virtual KASLR moves the kernel image in 2 MiB steps within 1 GiB.
KASLR_ALIGN = 0x20_0000
KASLR_RANGE = 0x4000_0000
# Distinct banner texts tried against the profile index (copies of one text count once).
MAX_BANNERS = 32

Progress = Callable[[int, int], None]


def profile_hint(release: str) -> str:
    """The command that builds a profile for ``release``, for error messages."""
    return (f"xenhpt profile build --kernel /boot/vmlinuz-{release} "
            f"-o ~/.cache/xenhpt/profiles/{release}.json")


@dataclass(frozen=True)
class KernelLayout:
    slide: int  # added to every profile symbol address
    dtb: int  # physical address of the kernel's top page table (init_top_pgt)
    banner: Banner
    levels: int = 4  # paging levels the kernel tables use (2 and 3: 32-bit and PAE)


# The kernel's top page table: x86-64 calls it init_top_pgt, i386 swapper_pg_dir (the
# PDPT with PAE), which is what CR3 holds once paging_init() has run.
TOP_TABLE_SYMBOLS = ("init_top_pgt", "swapper_pg_dir")
# A 32-bit kernel's half of the address space starts at PAGE_OFFSET (0xc0000000 with the
# default 3G/1G split; 0x80000000, 0xb0000000, 0x40000000 with the others), which no
# symbol names: the kernel is linked at PAGE_OFFSET + 16 MiB (CONFIG_PHYSICAL_START), so
# _text rounded down to 256 MiB is PAGE_OFFSET for every split.
_SPLIT_ALIGN = 0x1000_0000


def pointer_size(profile: Profile) -> int:
    """The kernel's pointer size: 4 on i386, 8 on x86-64 (a profile without the base type
    ``pointer`` is taken to be 64-bit, as all were before i386 kernels)."""
    try:
        return profile.size("pointer")
    except ProfileError:
        return 8


def paging_modes(pointer_size: int) -> tuple[int, ...]:
    """The paging modes (levels) a kernel with pointers of that size may run in, most
    likely first."""
    return (4, 5) if pointer_size == 8 else (3, 2)


class Kernel:
    """Typed access to a guest kernel's memory through its profile."""

    def __init__(self, target: Target, profile: Profile, layout: KernelLayout) -> None:
        self.target = target
        self.profile = profile
        self.layout = layout
        self.slide = layout.slide
        self.dtb = layout.dtb
        self.pointer_size = pointer_size(profile)
        self._pointer_format = "<Q" if self.pointer_size == 8 else "<I"
        self.word_max = (1 << 8 * self.pointer_size) - 1  # ULONG_MAX: addresses wrap here
        self.kernel_start = self._kernel_start()
        # Reads go through the target's translations (dropped whenever a live guest runs),
        # in the paging mode locate() found; Linux's KPTI rule tells a backend that places
        # traps by physical address where kernel text is when a user PGD is loaded.
        target.set_kernel_paging(layout.levels, kernel_dtb)

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, target: Target, profile_path: Path | None = None,
             progress: Progress | None = None, build_missing: bool = True) -> Kernel:
        """Find the banner, pick (or check) the profile, find the slide.

        With no profile matching the guest's banner, one is built from the guest's own
        memory (BTF and kallsyms, ``profile/guest_memory.py``), cached under the whole
        banner, and said so in one line on stderr; ``build_missing=False`` raises instead.
        """
        if profile_path is not None:
            profile = Profile.load(profile_path)
            layout = locate(target, profile, progress)
            if layout is None:
                found = find_banner(target, progress)
                seen = found.text if found else "no Linux banner at all"
                raise ProfileError(f"profile {profile_path.name} does not match this guest "
                                   f"(guest: {seen})")
            return cls(target, profile, layout)
        first: Banner | None = None
        tried: set[str] = set()
        for banner in iter_banners(target, progress):
            first = first or banner
            if banner.text in tried or len(tried) >= MAX_BANNERS:
                continue
            tried.add(banner.text)
            path = find_profile(banner.text)
            if path is None:
                continue
            profile = Profile.load(path)
            layout = locate(target, profile, progress)
            if layout is not None:
                return cls(target, profile, layout)
        if first is None:
            raise ProfileError("no Linux kernel banner in guest memory: not a Linux guest, "
                               "or the snapshot is empty/corrupt")
        if not build_missing:
            raise ProfileError(f"no profile matches {first.text!r}; build one with: "
                               + profile_hint(first.release))
        path = cached_profile_from_memory(target, first.text, progress)
        profile = Profile.load(path)
        layout = locate(target, profile, progress)
        if layout is None:
            raise ProfileError(f"the profile built from memory ({path}) does not fit the "
                               "guest it came from (memory changed while it was read?)")
        return cls(target, profile, layout)

    # -- symbols and memory --------------------------------------------------------------

    def symbol(self, name: str) -> int:
        address = self.profile.symbol(name)
        if address is None:
            raise ProfileError(f"profile {self.profile.path.name} has no symbol {name}")
        return (address + self.slide) & 0xFFFF_FFFF_FFFF_FFFF

    def has_symbol(self, name: str) -> bool:
        return self.profile.has_symbol(name)

    @property
    def banner(self) -> str:
        """The banner at the profile's ``linux_banner``: the one the kernel really uses."""
        return self.layout.banner.text

    def read(self, address: int, size: int) -> bytes:
        return self.target.read_virtual(self.dtb, address, size)

    def u64(self, address: int) -> int:
        return struct.unpack("<Q", self.read(address, 8))[0]

    def u32(self, address: int) -> int:
        return struct.unpack("<I", self.read(address, 4))[0]

    def pointer(self, address: int) -> int:
        """A kernel pointer at ``address`` (4 or 8 bytes, as the profile says)."""
        return struct.unpack(self._pointer_format, self.read(address, self.pointer_size))[0]

    def pointer_at(self, raw: bytes, offset: int) -> int:
        """A kernel pointer inside bytes already read (a structure read whole)."""
        return struct.unpack_from(self._pointer_format, raw, offset)[0]

    def is_kernel_address(self, value: int) -> bool:
        """Whether ``value`` lies in the kernel's half of the address space."""
        return self.kernel_start <= value <= self.word_max

    def _kernel_start(self) -> int:
        if self.pointer_size == 8:
            return 1 << 63
        text = self.profile.symbol("_text")
        return ((text + self.slide) & ~(_SPLIT_ALIGN - 1)) if text is not None else 0xC000_0000

    def physical(self, address: int) -> int:
        return self.target.translate(self.dtb, address)



def profile_from_memory(target: Target, progress: Progress | None = None) -> dict[str, Any]:
    """An ISF for the kernel in ``target`` from its memory alone (pause a live guest first)."""
    from ..profile.guest_memory import build_profile_from_memory

    banners = (banner.physical_address for banner in iter_banners(target, progress))
    return build_profile_from_memory(target, banners, target.description)


def cached_profile_from_memory(target: Target, banner: str,
                               progress: Progress | None = None) -> Path:
    """Build a profile from memory into the profile cache; its path (said on stderr)."""
    from ..profile import write_profile
    from ..profile.guest_memory import cache_path
    from ..profile.isf import default_cache_dir

    path = cache_path(banner, default_cache_dir() / "profiles")
    started = time.monotonic()
    isf = profile_from_memory(target, progress)
    write_profile(isf, path)
    log.warning("xenhpt: no profile matched %r: built one from guest memory in %.1f s "
                "(cached: %s)", banner.split(" (", 1)[0], time.monotonic() - started, path)
    return path


def locate(target: Target, profile: Profile, progress: Progress | None = None,
           ) -> KernelLayout | None:
    """Slide and kernel page tables for ``profile`` in ``target``, or None if it does not fit."""
    banner_va = profile.symbol("linux_banner")
    pgt_va = next((profile.symbol(name) for name in TOP_TABLE_SYMBOLS
                   if profile.has_symbol(name)), None)
    expected = profile.banner
    if banner_va is None or pgt_va is None or not expected:
        raise ProfileError(f"profile {profile.path.name} lacks linux_banner or the top page "
                           f"table ({'/'.join(TOP_TABLE_SYMBOLS)})")
    # The paging mode comes from the vCPU where the target knows it; a raw file does not,
    # so every mode a kernel with the profile's pointer size can use.
    known = target.paging_levels
    walkers = [PageWalker(target.read_physical, levels=n)
               for n in ((known,) if known else paging_modes(pointer_size(profile)))]
    needle = expected.rstrip("\n\0").encode()
    for banner in _aligned_banners(target, needle, banner_va) or find_banners(
            target, needle, progress):
        dtb = banner.physical_address + (pgt_va - banner_va)
        if not 0 <= dtb < target.physical_size:
            continue
        for walker in walkers:
            slide = _find_slide(walker, dtb, banner_va, banner.physical_address)
            if slide is not None:
                return KernelLayout(slide, dtb, banner, walker.levels)
    return None


def _aligned_banners(target: Target, needle: bytes, banner_va: int) -> list[Banner]:
    """The banner where it must be if the kernel was loaded on a 2 MiB boundary.

    The image is loaded (and physically randomised) in CONFIG_PHYSICAL_ALIGN steps, so
    ``linux_banner`` sits at the same offset within a 2 MiB page as its link address:
    one small read per 2 MiB instead of a scan of all memory. Empty if not found there.
    """
    found = []
    for base in range(0, target.physical_size, KASLR_ALIGN):
        address = base + (banner_va & (KASLR_ALIGN - 1))
        try:
            if target.read_physical(address, len(needle)) == needle:
                found.append(Banner(needle.decode("ascii", "replace"),
                                    needle.split(b" ")[2].decode("ascii", "replace"), address))
        except MemoryReadError:
            continue
    return found


def _find_slide(walker: PageWalker, dtb: int, banner_va: int, banner_pa: int) -> int | None:
    for slide in range(0, KASLR_RANGE, KASLR_ALIGN):
        try:
            if walker.translate(dtb, banner_va + slide) == banner_pa:
                return slide
        except MemoryReadError:
            continue
    return None
