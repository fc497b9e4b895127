"""The one interface every backend implements: a guest seen from outside.

Backends (QEMU gdbstub, LibVMI on Xen, snapshot files) know nothing about Linux;
they turn addresses into bytes and expose vCPU registers and traps. Everything
above this layer is written against :class:`Target` only: what a caller uses of a
backend is declared here, and what the guest OS layer knows that a backend needs
(the paging mode it found, where the kernel's page tables are) is handed over
through :meth:`Target.set_kernel_paging`, never written into a backend's fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

# Register names every backend understands (lower case, 64-bit values).
GENERAL_REGISTERS = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
)
CONTROL_REGISTERS = (
    "rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs",
    "fs_base", "gs_base", "k_gs_base", "cr0", "cr2", "cr3", "cr4", "cr8", "efer",
)
REGISTER_NAMES = GENERAL_REGISTERS + CONTROL_REGISTERS


@dataclass(frozen=True)
class Trap:
    """One stop of the guest: which vCPU, where, and why."""

    vcpu: int
    pc: int
    reason: str = "breakpoint"


@runtime_checkable
class PhysicalMemory(Protocol):
    """Flat guest-physical memory: the only thing a snapshot or a live guest must give."""

    def read_physical(self, address: int, size: int) -> bytes:
        """Return ``size`` bytes at guest-physical ``address`` or raise MemoryReadError."""
        ...

    @property
    def physical_size(self) -> int:
        """One past the highest guest-physical address that may hold RAM."""
        ...


# CR3 -> the physical address of page tables that map the kernel in that address space,
# for kernel addresses the CR3 itself does not map. The guest OS knows the rule (Linux
# with KPTI: the kernel half of a PGD pair, ``xenhpt/linux/kpti.py``); until told, a
# backend uses the CR3 as it is.
KernelTables = Callable[[int], int]


@runtime_checkable
class Target(PhysicalMemory, Protocol):
    """A guest: memory, vCPUs, and (for live guests) traps.

    Snapshot targets implement the memory half and report ``live = False``;
    their trap methods raise ``XenhptError``.
    """

    live: bool
    description: str  # one line naming the guest in messages, e.g. "qemu:HOST:PORT"
    # The shared file of a capture plugin running inside this guest's emulator (QEMU's
    # xenhpt_capture), or None: a backend without one sets None.
    capture_file: Path | None

    # -- memory through page tables ------------------------------------------------------

    def read_virtual(self, dtb: int, address: int, size: int) -> bytes:
        """Read through the page tables rooted at ``dtb`` (a CR3 value; PCID bits ignored)."""
        ...

    def translate(self, dtb: int, address: int) -> int:
        """Guest-physical address of virtual ``address`` in the tables at ``dtb``."""
        ...

    @property
    def paging_levels(self) -> int | None:
        """4 or 5 (CR4.LA57) when the backend read the paging mode from a vCPU; None
        when it cannot know (a raw memory file has no registers)."""
        ...

    def set_kernel_paging(self, levels: int, kernel_tables: KernelTables) -> None:
        """What the guest OS layer found out: the paging mode the kernel's tables use
        (which a raw file cannot tell), and how to reach kernel addresses from a CR3 that
        does not map them. Backends that translate kernel addresses on their own (to place
        a trap by physical address) use ``kernel_tables``; the others may ignore it."""
        ...

    def flush_translations(self) -> None:
        """Forget cached translations. Live backends do it whenever the guest has run; a
        caller reading a guest that runs on (the capture plugin) calls it itself."""
        ...

    @property
    def vcpu_count(self) -> int: ...

    def registers(self, vcpu: int) -> dict[str, int]:
        """All of :data:`REGISTER_NAMES` the backend can read for ``vcpu``."""
        ...

    def write_register(self, vcpu: int, name: str, value: int) -> None: ...

    def read_msr(self, vcpu: int, index: int) -> int:
        """Model-specific register ``index`` (``vmi/x86/msr.py``) of a paused ``vcpu``;
        MsrUnavailable, saying why, where the backend or the file has no MSRs."""
        ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def insert_breakpoint(self, address: int) -> None:
        """Trap execution of the kernel virtual ``address`` on every vCPU."""
        ...

    def remove_breakpoint(self, address: int) -> None: ...

    def wait_for_trap(self, timeout: float | None) -> Trap | None:
        """Run the guest until a trap fires (returned, guest paused) or ``timeout`` (None)."""
        ...

    def release_stale_monitor(self) -> None:
        """Undo what a killed tracer left inside the hypervisor besides its traps (Xen
        keeps a dead monitor's vm_event ring); a no-op where nothing outlives the tracer."""
        ...

    def close(self) -> None:
        """Remove every trap, leave the guest running, release the connection."""
        ...
