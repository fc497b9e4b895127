"""Raw memory images through LibVMI's file mode (``VMI_FILE``), as a second reader.

LibVMI reads a file as flat physical memory (byte *n* is address *n*), so only
raw images qualify. It is initialised partially (``vmi_init``, no OS profile):
physical reads need neither paging nor a kernel configuration. Each read is a
cffi call into LibVMI's page cache (``lseek`` + ``read`` per new page), two to
five times slower than slicing our own mmap (tools/bench_snapshot_read.py), so
:func:`~xenhpt.vmi.snapshot.open_snapshot` uses it only on request
(``reader="libvmi"``), to cross-check our reader against the design card's library.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import MemoryReadError, SnapshotError


class LibvmiFileMemory:
    """Guest-physical reads of a raw image through LibVMI file mode."""

    def __init__(self, path: Path) -> None:
        try:
            from libvmi import INIT_DOMAINNAME, Libvmi, LibvmiError, VMIMode
        except ImportError as exc:  # the wheel bundles libvmi.so; a broken install lands here
            raise SnapshotError(f"{path}: the libvmi Python package is not usable: {exc}") from None
        self._error = LibvmiError
        try:
            self._vmi = Libvmi(str(path), INIT_DOMAINNAME, mode=VMIMode.FILE, partial=True)
        except LibvmiError as exc:
            raise SnapshotError(f"{path}: LibVMI file mode cannot open it ({exc})") from None
        self._size = int(self._vmi.get_memsize())

    @property
    def physical_size(self) -> int:
        return self._size

    def read_physical(self, address: int, size: int) -> bytes:
        if address < 0 or size < 0 or address + size > self._size:
            raise MemoryReadError(address, "guest-physical address not in the snapshot")
        if size == 0:
            return b""
        try:
            data, count = self._vmi.read_pa(address, size)
        except self._error:
            raise MemoryReadError(address, "LibVMI could not read this guest-physical address") \
                from None
        if count != size:
            raise MemoryReadError(address + count, "LibVMI returned a short read")
        return bytes(data)

    def close(self) -> None:
        self._vmi.destroy()  # a no-op the second time
