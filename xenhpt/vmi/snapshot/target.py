"""Memory snapshot files as a :class:`~xenhpt.vmi.target.Target` (the memory half).

A forensic examiner hands xenhpt a file; everything above this layer reads it
exactly as it reads a live guest. :func:`open_snapshot` recognises the format
by its content (never by its name) and returns a :class:`SnapshotTarget`:

* raw flat physical memory (QEMU ``pmemsave``) — the fallback when no magic matches;
* QEMU ``dump-guest-memory`` ELF cores, with per-vCPU registers from their notes;
* Xen ``xl dump-core`` files of HVM/PVH guests, with registers from ``.xen_prstatus``;
* LiME (``EMiL``) range files.

The file is mapped once; a read is a binary search in the segment table and a
slice of the mapping. Snapshots cannot run, so every trap method raises
``XenhptError``.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Literal, Protocol

from ...errors import MsrUnavailable, SnapshotError, XenhptError
from ..target import Trap
from ..x86.paging import PagedMemory, PageWalker, levels_from_cr4
from .formats import describe
from .libvmi_file import LibvmiFileMemory
from .memory import SegmentedMemory, SnapshotLayout

Reader = Literal["mmap", "libvmi"]


class _SnapshotMemory(Protocol):
    @property
    def physical_size(self) -> int: ...

    def read_physical(self, address: int, size: int) -> bytes: ...

    def close(self) -> None: ...


def open_snapshot(path: Path, reader: Reader = "mmap") -> SnapshotTarget:
    """Open a memory snapshot file of any supported format.

    ``reader`` picks who reads a raw image: ``"mmap"`` (the default, ours) or
    ``"libvmi"`` (LibVMI file mode, raw images only; 2-5x slower).
    Raises ``SnapshotError`` naming the file and the problem if it is missing,
    empty, truncated, corrupt or of a format we refuse.
    """
    path = Path(path)
    if reader not in ("mmap", "libvmi"):
        raise SnapshotError(f"{path}: unknown snapshot reader {reader!r} (mmap or libvmi)")
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise SnapshotError(f"{path}: the file is empty")
            mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except IsADirectoryError:
        raise SnapshotError(f"{path}: is a directory, not a snapshot file") from None
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot open snapshot: {exc.strerror or exc}") from None
    except ValueError as exc:  # mmap of something that is not a regular file
        raise SnapshotError(f"{path}: cannot map snapshot: {exc}") from None
    try:
        layout = describe(mapping)
    except SnapshotError as exc:
        mapping.close()
        raise SnapshotError(f"{path}: {exc}") from None
    if reader == "mmap":
        return SnapshotTarget(path, layout, SegmentedMemory(mapping, layout.segments))
    mapping.close()
    if layout.format != "raw":
        raise SnapshotError(f"{path}: LibVMI file mode reads only raw images, "
                            f"this is {layout.format}")
    return SnapshotTarget(path, layout, LibvmiFileMemory(path))


class SnapshotTarget(PagedMemory):
    """:class:`~xenhpt.vmi.target.Target` over a memory snapshot: memory and saved vCPUs only."""

    live = False
    capture_file: Path | None = None

    def __init__(self, path: Path, layout: SnapshotLayout, memory: _SnapshotMemory) -> None:
        self.path = path
        self.format = layout.format
        self.description = str(path)
        self._memory = memory
        self._registers = layout.registers
        # 4- or 5-level tables, as vCPU 0's CR4 says; without registers the mode is unknown
        # (the kernel locator tries both and says which through set_kernel_paging).
        cr4 = layout.registers[0].get("cr4") if layout.registers else None
        self.paging = PageWalker(self.read_physical,
                                 levels=None if cr4 is None else levels_from_cr4(cr4))

    def __enter__(self) -> SnapshotTarget:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- memory ----------------------------------------------------------------------------

    @property
    def physical_size(self) -> int:
        return self._memory.physical_size

    @property
    def ranges(self) -> list[tuple[int, int]]:
        """Readable guest-physical ranges ``(start, end)``; the holes are everything else."""
        if isinstance(self._memory, SegmentedMemory):
            return self._memory.ranges
        return [(0, self._memory.physical_size)]

    def read_physical(self, address: int, size: int) -> bytes:
        return self._memory.read_physical(address, size)

    # -- vCPUs -----------------------------------------------------------------------------

    @property
    def vcpu_count(self) -> int:
        return len(self._registers) or 1

    def registers(self, vcpu: int) -> dict[str, int]:
        if not self._registers:
            raise XenhptError(f"{self.path}: this snapshot has no vCPU registers "
                              f"({self.format} format)")
        if not 0 <= vcpu < len(self._registers):
            raise XenhptError(f"{self.path}: no vCPU {vcpu} (the snapshot has "
                              f"{len(self._registers)})")
        return dict(self._registers[vcpu])

    def read_msr(self, vcpu: int, index: int) -> int:
        # None of the formats carries them: QEMU's ELF notes hold QEMUCPUState (general,
        # segment and control registers, kernel_gs_base), Xen's dump-core a PV
        # vcpu_guest_context, raw and LiME no CPU state at all.
        raise MsrUnavailable("MSRs are not in a memory image (a QEMU ELF dump's notes carry "
                             "the general and control registers, not MSRs)")

    # -- what a snapshot cannot do ---------------------------------------------------------

    def _cannot(self, what: str) -> XenhptError:
        return XenhptError(f"{self.path}: a snapshot cannot {what}; use a live target")

    def write_register(self, vcpu: int, name: str, value: int) -> None:
        raise self._cannot("have its registers written")

    def pause(self) -> None:
        raise self._cannot("be paused")

    def resume(self) -> None:
        raise self._cannot("be resumed")

    def insert_breakpoint(self, address: int) -> None:
        raise self._cannot("take breakpoints")

    def remove_breakpoint(self, address: int) -> None:
        raise self._cannot("take breakpoints")

    def wait_for_trap(self, timeout: float | None) -> Trap | None:
        raise self._cannot("run to a trap")

    def release_stale_monitor(self) -> None:
        """Nothing to release: a file has no hypervisor behind it."""

    def close(self) -> None:
        """Unmap the file; safe to call twice."""
        self._memory.close()
