"""The one interface every backend implements: a guest seen from outside.

Backends (QEMU gdbstub, LibVMI on Xen, snapshot files) know nothing about Linux;
they turn addresses into bytes and expose vCPU registers and traps. Everything
above this layer is written against :class:`Target` only.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@runtime_checkable
class Target(PhysicalMemory, Protocol):
    """A guest: memory, vCPUs, and (for live guests) traps.

    Snapshot targets implement the memory half and report ``live = False``;
    their trap methods raise ``XenhptError``.
    """

    live: bool

    def read_virtual(self, dtb: int, address: int, size: int) -> bytes:
        """Read through the page tables rooted at ``dtb`` (a CR3 value; PCID bits ignored)."""
        ...

    @property
    def vcpu_count(self) -> int: ...

    def registers(self, vcpu: int) -> dict[str, int]:
        """All of :data:`REGISTER_NAMES` the backend can read for ``vcpu``."""
        ...

    def write_register(self, vcpu: int, name: str, value: int) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def insert_breakpoint(self, address: int) -> None:
        """Trap execution of the kernel virtual ``address`` on every vCPU."""
        ...

    def remove_breakpoint(self, address: int) -> None: ...

    def wait_for_trap(self, timeout: float | None) -> Trap | None:
        """Run the guest until a trap fires (returned, guest paused) or ``timeout`` (None)."""
        ...

    def close(self) -> None:
        """Remove every trap, leave the guest running, release the connection."""
        ...
