"""The MSR writes a system-call tracer must follow, out of everything ``MSR_ALL`` reports.

LibVMI's Python ``RegEvent`` cannot ask Xen for one MSR, so the backend registers
``MSR_ALL`` and this module keeps what matters: a new entry point in LSTAR (64-bit
``syscall``), CSTAR (compat ``syscall``) or SYSENTER_EIP (``sysenter``), and EFER.SCE
being switched (``syscall`` disabled or enabled). Everything else (KERNEL_GS_BASE on
context switches, TSC_AUX, MTRRs, ...) is dropped without a trace.
"""

from __future__ import annotations

from dataclasses import dataclass

MSR_EFER = 0xC000_0080
MSR_LSTAR = 0xC000_0082
MSR_CSTAR = 0xC000_0083
MSR_SYSENTER_EIP = 0x176
EFER_SCE = 1 << 0

# MSR index -> (name, the mechanism whose entry point it holds)
ENTRY_MSRS = {
    MSR_LSTAR: ("LSTAR", "syscall (64-bit)"),
    MSR_CSTAR: ("CSTAR", "syscall (compat)"),
    MSR_SYSENTER_EIP: ("SYSENTER_EIP", "sysenter"),
}
WATCHED = frozenset((*ENTRY_MSRS, MSR_EFER))


@dataclass(frozen=True)
class MsrChange:
    """A guest write that changes how system calls enter the kernel."""

    vcpu: int
    msr: int
    name: str
    old: int
    new: int
    entry_moved: bool  # an entry-point MSR now points elsewhere (re-plan the trap)

    def describe(self) -> str:
        if self.msr == MSR_EFER:
            state = "enabled" if self.new & EFER_SCE else "disabled"
            return (f"vCPU {self.vcpu}: the guest wrote EFER {self.old:#x} -> {self.new:#x}: "
                    f"64-bit syscall {state} (EFER.SCE)")
        return (f"vCPU {self.vcpu}: the guest moved the {ENTRY_MSRS[self.msr][1]} entry point: "
                f"{self.name} {self.old:#x} -> {self.new:#x}")


class MsrWatch:
    """Known values of the watched MSRs per vCPU, and the filter for ``MSR_ALL`` events."""

    def __init__(self) -> None:
        self.known: dict[tuple[int, int], int] = {}  # (vcpu, msr) -> value

    def seed(self, vcpu: int, msr: int, value: int) -> None:
        self.known[(vcpu, msr)] = value

    def on_write(self, vcpu: int, msr: int, new: int, previous: int | None = None
                 ) -> MsrChange | None:
        """The change a write of ``new`` to ``msr`` makes, or None if it does not matter.

        The old value is what we last saw on that vCPU (seeded at attach), else the
        event's ``previous``. Writing the same entry address again (Linux does on every
        CPU at boot and resume) is no change; for EFER only the SCE bit counts.
        """
        if msr not in WATCHED:
            return None
        old = self.known.get((vcpu, msr), previous)
        self.known[(vcpu, msr)] = new
        if old is None:
            return None  # nothing to compare with: remember it
        if msr == MSR_EFER:
            if (old ^ new) & EFER_SCE == 0:
                return None
            return MsrChange(vcpu, msr, "EFER", old, new, entry_moved=False)
        if old == new:
            return None
        return MsrChange(vcpu, msr, ENTRY_MSRS[msr][0], old, new, entry_moved=True)
