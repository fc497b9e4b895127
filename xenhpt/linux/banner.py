"""Find the kernel's version banner ("Linux version ...") in guest-physical memory.

Before a profile is known this is how we tell which kernel runs; with a profile,
the banner's physical address also gives the kernel's physical load address.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import MemoryReadError
from ..vmi.target import PhysicalMemory

BANNER_PREFIX = b"Linux version "
# The kernel text lands at 16 MiB unless relocated (physical KASLR): look there first.
DEFAULT_LOAD_ADDRESS = 0x100_0000
_CHUNK = 1 << 20
_MAX_BANNER = 512
# A real banner: release, "(builder@host)", compiler, "#N SMP ... date", newline.
_BANNER_RE = re.compile(rb"Linux version (\S+) \([^\n]{1,400}\)[^\n]{0,200}#[^\n]{1,300}\n")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Banner:
    text: str
    release: str
    physical_address: int


def _scan_order(size: int) -> Iterator[tuple[int, int]]:
    start = min(DEFAULT_LOAD_ADDRESS, size)
    for base in range(start, size, _CHUNK):
        yield base, min(_CHUNK, size - base)
    for base in range(0, start, _CHUNK):
        yield base, min(_CHUNK, start - base)


def _occurrences(memory: PhysicalMemory, needle: bytes,
                 progress: Progress | None) -> Iterator[tuple[int, bytes]]:
    """(physical address, bytes from there) of each ``needle``, kernel load area first."""
    size = memory.physical_size
    done = 0
    for base, length in _scan_order(size):
        try:
            # Overlap chunks so a banner straddling a boundary is seen whole.
            data = memory.read_physical(base, min(length + _MAX_BANNER, size - base))
        except MemoryReadError:
            data = b""
        pos = data.find(needle)
        while 0 <= pos < length:
            yield base + pos, data[pos : pos + _MAX_BANNER]
            pos = data.find(needle, pos + 1)
        done += length
        if progress:
            progress(done, size)


def _parse(address: int, data: bytes) -> Banner | None:
    match = _BANNER_RE.match(data)
    if not match:
        return None
    text = match.group(0).rstrip(b"\n").decode("ascii", "replace")
    return Banner(text, match.group(1).decode("ascii", "replace"), address)


def iter_banners(memory: PhysicalMemory, progress: Progress | None = None) -> Iterator[Banner]:
    """Every well-formed banner, kernel load area first.

    There is more than one even in the kernel image: since 6.1 ``init/version.o`` keeps a
    weak ``linux_banner`` with an empty build number ("# SMP") beside the real one from
    ``version-timestamp.o`` ("#1 SMP"); copies in the log buffer or page cache follow.
    """
    for address, data in _occurrences(memory, BANNER_PREFIX, progress):
        banner = _parse(address, data)
        if banner is not None:
            yield banner


def find_banner(memory: PhysicalMemory, progress: Progress | None = None) -> Banner | None:
    """The first well-formed banner in physical memory (enough to name the release)."""
    return next(iter_banners(memory, progress), None)


def find_banners(memory: PhysicalMemory, exact: bytes,
                 progress: Progress | None = None) -> Iterator[Banner]:
    """Every occurrence of the ``exact`` banner text (callers validate which is the kernel's)."""
    for address, data in _occurrences(memory, exact, progress):
        banner = _parse(address, data + b"\n")
        if banner is not None:
            yield banner
