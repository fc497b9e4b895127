"""Which snapshot format a file is, decided by its first bytes; raw and LiME layouts.

* ELF (``\\x7fELF``): QEMU ``dump-guest-memory`` or Xen ``xl dump-core``, see
  :mod:`.snapshot_elf`.
* LiME (``EMiL``, the little-endian magic 0x4C694D45): a sequence of 32-byte
  range headers ``{magic, version (1), start, end (inclusive), reserved[8]}``,
  each followed by ``end - start + 1`` bytes of memory.
* Anything else is raw flat physical memory (QEMU ``pmemsave``, ``dd`` of
  /dev/mem ...): byte *n* of the file is physical address *n*. A few formats
  that would be misread as raw (compressed files, kdump, Windows crash dumps,
  VMware and QEMU savevm state) are recognised and refused with a hint.
"""

from __future__ import annotations

import mmap

from ...errors import SnapshotError
from .elf import ELF_MAGIC, parse_elf
from .memory import Segment, SnapshotLayout, check_physical, unpack_at

LIME_MAGIC = 0x4C694D45
_LIME_HEADER = "<IIQQ8s"
_LIME_HEADER_SIZE = 32
_LIME_VERSION = 1
MAX_LIME_RANGES = 1 << 20

# Leading bytes of formats that are not flat memory, so must not fall back to raw.
_NOT_RAW = (
    (b"\x1f\x8b", "a gzip file: decompress it first"),
    (b"\xfd7zXZ\x00", "an xz file: decompress it first"),
    (b"\x28\xb5\x2f\xfd", "a zstd file: decompress it first"),
    (b"\x04\x22\x4d\x18", "an LZ4 file: decompress it first"),
    (b"BZh", "a bzip2 file: decompress it first"),
    (b"PK\x03\x04", "a zip archive: extract it first"),
    (b"KDUMP   ", "a kdump-compressed dump: convert it to ELF with "
                  "'makedumpfile -E' or use the ELF dump"),
    (b"DISKDUMP", "a diskdump-compressed dump: convert it to ELF with 'makedumpfile -E'"),
    (b"makedumpfile", "a flattened makedumpfile stream: rebuild it with 'makedumpfile -R'"),
    (b"PAGEDU64", "a Windows crash dump, not a Linux memory snapshot"),
    (b"PAGEDUMP", "a Windows crash dump, not a Linux memory snapshot"),
    (b"QEVM", "QEMU savevm/migration state: use 'dump-guest-memory' or 'pmemsave' instead"),
    (b"\xd0\xbe\xd2\xbe", "VMware suspend state (.vmss/.vmsn): use the .vmem file instead"),
    (b"\xd1\xba\xd1\xba", "VMware suspend state (.vmss/.vmsn): use the .vmem file instead"),
    (b"\xd2\xbe\xd2\xbe", "VMware suspend state (.vmss/.vmsn): use the .vmem file instead"),
    (b"\xd3\xbe\xd3\xbe", "VMware suspend state (.vmss/.vmsn): use the .vmem file instead"),
)


def describe(data: mmap.mmap) -> SnapshotLayout:
    """The layout of a mapped snapshot file, by its magic; SnapshotError if it is unusable."""
    head = data[:16]
    if head.startswith(ELF_MAGIC):
        return parse_elf(data)
    if head.startswith(LIME_MAGIC.to_bytes(4, "little")):
        return parse_lime(data)
    for magic, what in _NOT_RAW:
        if head.startswith(magic):
            raise SnapshotError(f"this is {what}")
    return SnapshotLayout("raw", [Segment(0, len(data), 0)])


def parse_lime(data: mmap.mmap) -> SnapshotLayout:
    """Walk LiME range headers to the end of the file."""
    segments: list[Segment] = []
    offset = 0
    while offset < len(data):
        number = len(segments)
        if number >= MAX_LIME_RANGES:
            raise SnapshotError(f"more than {MAX_LIME_RANGES} LiME ranges")
        what = f"LiME range header {number}"
        magic, version, start, end, _ = unpack_at(_LIME_HEADER, data, offset, what)
        if magic != LIME_MAGIC:
            raise SnapshotError(f"{what} at offset {offset:#x} has bad magic {magic:#010x}")
        if version != _LIME_VERSION:
            raise SnapshotError(f"{what} has version {version} (only {_LIME_VERSION} is known)")
        if end < start:
            raise SnapshotError(f"{what} ends ({end:#x}) before it starts ({start:#x})")
        length = end - start + 1
        check_physical(start, length, what)
        body = offset + _LIME_HEADER_SIZE
        if body + length > len(data):
            raise SnapshotError(f"truncated: LiME range {number} (physical {start:#x}-{end:#x}) "
                                f"needs {length:#x} bytes, only {len(data) - body:#x} remain")
        segments.append(Segment(start, length, body))
        offset = body + length
    return SnapshotLayout("lime", segments)
