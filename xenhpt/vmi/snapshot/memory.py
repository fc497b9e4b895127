"""Guest-physical memory of a snapshot file: a sorted table of segments over one mmap.

Every snapshot format reduces to the same picture: runs of guest-physical
addresses stored at some offset in the file, with holes between them. The
format parsers (:mod:`.snapshot_formats`, :mod:`.snapshot_elf`) describe a file
as a :class:`SnapshotLayout`; :class:`SegmentedMemory` answers reads from it
with one binary search and one slice of the mapping.

The file is hostile input: the parsers check every offset and length against
the file size through :func:`unpack_at`, which raises ``SnapshotError`` rather
than ``struct.error`` when a structure runs past the end.
"""

from __future__ import annotations

import mmap
import struct
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import NamedTuple

from ...errors import MemoryReadError, SnapshotError

# x86-64 physical addresses have at most 52 bits (MAXPHYADDR); anything above is corrupt.
MAX_PHYSICAL_ADDRESS = 1 << 52
# More vCPUs than any x86 hypervisor supports (QEMU and KVM: 4096, Xen HVM: 128).
MAX_VCPUS = 4096


class Segment(NamedTuple):
    """``length`` bytes of guest-physical memory at ``physical``, stored at file ``offset``."""

    physical: int
    length: int
    offset: int


@dataclass
class SnapshotLayout:
    """What a format parser found in a file: where the memory is and the vCPU state."""

    format: str
    segments: list[Segment]
    # One dict per vCPU (names from target.REGISTER_NAMES); empty if the format has none.
    registers: list[dict[str, int]] = field(default_factory=list)


def unpack_at(fmt: str, data: mmap.mmap | bytes, offset: int, what: str) -> tuple[int, ...]:
    """``struct.unpack_from`` that names ``what`` was cut short instead of raising struct.error."""
    size = struct.calcsize(fmt)
    if offset < 0 or offset + size > len(data):
        raise SnapshotError(f"truncated: {what} at offset {offset:#x} needs {size} bytes, "
                            f"the file has {len(data):#x}")
    return struct.unpack_from(fmt, data, offset)


def check_within(data: mmap.mmap | bytes, offset: int, length: int, what: str) -> None:
    """Raise SnapshotError unless ``[offset, offset + length)`` lies inside the file."""
    if offset < 0 or length < 0 or offset + length > len(data):
        raise SnapshotError(f"truncated: {what} at file offset {offset:#x} is {length:#x} bytes "
                            f"but the file ends at {len(data):#x}")


def check_physical(physical: int, length: int, what: str) -> None:
    """Raise SnapshotError if a range lies beyond the 52-bit physical address space."""
    if physical < 0 or physical + length > MAX_PHYSICAL_ADDRESS:
        raise SnapshotError(f"{what} at physical {physical:#x} (+{length:#x}) lies beyond "
                            "the 52-bit physical address space")


class SegmentedMemory:
    """Read-only guest-physical memory over a mapped file and its segment table.

    Overlapping segments (a kdump-style core maps some RAM twice) are trimmed so
    that the lowest-addressed one wins; adjacent segments that are also adjacent
    in the file are merged, so a raw file or a QEMU dump is one or two entries.
    """

    def __init__(self, mapping: mmap.mmap, segments: list[Segment]) -> None:
        self._map = mapping
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._offsets: list[int] = []
        for physical, length, offset in sorted(s for s in segments if s.length > 0):
            if self._ends and physical < self._ends[-1]:
                # Overlap: keep only the part above what is already covered.
                cut = self._ends[-1] - physical
                if cut >= length:
                    continue
                physical, length, offset = physical + cut, length - cut, offset + cut
            if (self._ends and physical == self._ends[-1]
                    and offset == self._offsets[-1] + (self._ends[-1] - self._starts[-1])):
                self._ends[-1] += length
                continue
            self._starts.append(physical)
            self._ends.append(physical + length)
            self._offsets.append(offset)

    @property
    def physical_size(self) -> int:
        return self._ends[-1] if self._ends else 0

    @property
    def ranges(self) -> list[tuple[int, int]]:
        """The readable guest-physical ranges as ``(start, end)``, sorted, end exclusive."""
        return list(zip(self._starts, self._ends, strict=True))

    def read_physical(self, address: int, size: int) -> bytes:
        if address < 0 or size < 0:
            raise MemoryReadError(address, "negative guest-physical address or size")
        index = bisect_right(self._starts, address) - 1
        if index >= 0 and address + size <= self._ends[index]:
            offset = self._offsets[index] + (address - self._starts[index])
            return self._map[offset : offset + size]
        return self._read_across(address, size)

    def _read_across(self, address: int, size: int) -> bytes:
        """A read that spans segments; fails at the first byte that no segment holds."""
        out = bytearray()
        while size > 0:
            index = bisect_right(self._starts, address) - 1
            if index < 0 or address >= self._ends[index]:
                raise MemoryReadError(address, "guest-physical address not in the snapshot")
            chunk = min(size, self._ends[index] - address)
            offset = self._offsets[index] + (address - self._starts[index])
            out += self._map[offset : offset + chunk]
            address += chunk
            size -= chunk
        return bytes(out)

    def close(self) -> None:
        self._map.close()
