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


def find_banner(memory: PhysicalMemory, progress: Progress | None = None,
                expected: bytes | None = None) -> Banner | None:
    """First well-formed banner in physical memory (or the exact ``expected`` one).

    The kernel's own ``linux_banner`` string comes first in memory order from its
    load address; copies elsewhere (dmesg buffer, page cache) come later.
    """
    size = memory.physical_size
    done = 0
    for base, length in _scan_order(size):
        try:
            # Overlap chunks so a banner straddling a boundary is seen whole.
            data = memory.read_physical(base, min(length + _MAX_BANNER, size - base))
        except MemoryReadError:
            data = b""
        pos = data.find(expected or BANNER_PREFIX)
        while 0 <= pos < length:
            match = _BANNER_RE.match(data, pos)
            if match:
                text = match.group(0).rstrip(b"\n").decode("ascii", "replace")
                return Banner(text, match.group(1).decode("ascii", "replace"), base + pos)
            pos = data.find(expected or BANNER_PREFIX, pos + 1)
        done += length
        if progress:
            progress(done, size)
    return None
