"""A QEMU guest's physical memory, two ways (measured in ``tools/bench_foundation.py``).

:class:`GdbPhysicalMemory` reads through the gdbstub's ``Qqemu.PhyMemMode`` packets (any
QEMU; the VM must be stopped; at most 2047 bytes a packet). :class:`MappedRam` maps the
file of QEMU's shared ``memory-backend-file`` (the lab's, on ``/dev/shm``): reads while
the guest runs, at memcpy speed.
"""

from __future__ import annotations

import mmap
from pathlib import Path

from ...errors import MemoryReadError, XenhptError
from .gdbremote import MAX_READ, GdbError, GdbRemote


class GdbPhysicalMemory:
    """Guest-physical reads over the gdbstub (slow, but works for any QEMU)."""

    def __init__(self, remote: GdbRemote, size: int) -> None:
        self._remote = remote
        self._size = size
        remote.checked("Qqemu.PhyMemMode:1")

    @property
    def physical_size(self) -> int:
        return self._size

    def read_physical(self, address: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            chunk = min(size, MAX_READ)
            try:
                reply = self._remote.checked(f"m{address:x},{chunk:x}")
            except GdbError:
                raise MemoryReadError(address, "guest-physical address not readable") from None
            out += bytes.fromhex(reply.decode())
            address += chunk
            size -= chunk
        return bytes(out)

    def write_physical(self, address: int, data: bytes) -> None:
        try:
            self._remote.checked(f"M{address:x},{len(data):x}:{data.hex()}")
        except GdbError:
            raise MemoryReadError(address, "guest-physical address not writable") from None


class MappedRam:
    """Guest RAM from QEMU's shared memory-backend-file (flat below 4 GiB)."""

    def __init__(self, path: Path) -> None:
        try:
            # Writable, shared: an emulated push (see emulate_breakpoint) stores to guest RAM.
            with open(path, "r+b") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE)
        except OSError as exc:
            raise XenhptError(f"cannot map guest RAM file {path}: {exc}") from None
        self._size = len(self._map)

    @property
    def physical_size(self) -> int:
        return self._size

    def read_physical(self, address: int, size: int) -> bytes:
        if address < 0 or address + size > self._size:
            raise MemoryReadError(address, "guest-physical address beyond RAM")
        return self._map[address : address + size]

    def write_physical(self, address: int, data: bytes) -> None:
        if address < 0 or address + len(data) > self._size:
            raise MemoryReadError(address, "guest-physical address beyond RAM")
        self._map[address : address + len(data)] = data

    def close(self) -> None:
        self._map.close()
