"""The exception trap: make ``syscall`` fault, catch the fault, run the call ourselves.

The method xenhpt grew from (interception of the system-call instructions inside the
VMM) made the instructions trap by breaking their execution conditions. For the 64-bit
``syscall`` (and 32-bit ``syscall`` in compat mode) that is ``EFER.SCE``, which a QEMU
gdbstub can write: with it cleared, every ``syscall`` and ``sysret`` raises ``#UD``. This
source clears it on every vCPU and breaks at the kernel's ``#UD`` entry; a fault whose
frame is user mode at a ``0f 05`` is a system call: it is recorded (the user's registers
are intact: the fault changed only RIP, CS, RFLAGS, RSP and SS, saved in the frame) and
the vCPU is set up as ``syscall`` would have left it (``vmi/x86/fast_syscall.py``), so the
guest never sees the fault. Any other ``#UD`` (a ``ud2``, a kernel ``BUG()``) goes to the
guest untouched. The kernel's own ``sysret`` would fault too (and in kernel mode, on the
user's stack): a breakpoint on it runs it in the kernel's place. Return values come from
the common exit, as for the other breakpoint traces.

What a gdbstub cannot do is said, not hidden: ``sysenter``'s condition is the
SYSENTER_CS MSR and ``int 0x80``'s the IDT limit, neither of which QEMU's gdbstub writes,
so those two mechanisms stay on ordinary breakpoints at their entry stubs (each record
still names its mechanism). Xen offers no ``#UD`` monitor event: there the exception trap
is refused with one line.

``EFER.SCE`` is restored on every vCPU however the trace ends: by ``stop`` normally, and by
the guardian if the tracer dies (it also rewinds a vCPU the tracer left at the ``#UD``
entry, so that its ``syscall`` runs again, for real).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import BadUsage, MemoryReadError
from ..linux.kernel import Kernel
from ..linux.segments import KERNEL_CS, SYSCALL_MASK, SYSRET_BASE, USER32_CS
from ..vmi.target import Target
from ..vmi.x86.fast_syscall import (
    EFER_SCE,
    FRAME_SIZE,
    SYSCALL_OPCODE,
    SyscallSegments,
    syscall_effect,
    sysret_effect,
    user_state_of_fault,
)
from .capture import BreakpointCapture
from .engine import SyscallEngine
from .records import TrapRecord
from .source import CaptureReport
from .trappoints import ARGS_COMPAT_SYSCALL, ARGS_X86_64, TrapPoint, exception_plan

LINUX_SEGMENTS = SyscallSegments(kernel_cs=KERNEL_CS, sysret_base=SYSRET_BASE,
                                 fmask=SYSCALL_MASK)
# What `xenhpt trace --method exception` says about the mechanisms it cannot make fault.
NOT_BY_EXCEPTION = ("sysenter and int 0x80 are trapped by breakpoints at their entry stubs: "
                    "their conditions (the SYSENTER_CS MSR, the IDT limit) cannot be written "
                    "through QEMU's gdbstub")


class ExceptionCapture(BreakpointCapture):
    """Breakpoint capture whose 64-bit and compat ``syscall`` entries are ``#UD`` faults."""

    def __init__(self, target: Target, kernel: Kernel, engine: SyscallEngine) -> None:
        refuse = getattr(target, "insert_exception_trap", None)
        if refuse is not None:
            refuse("efer-sce")  # the backend says in one line why it cannot (Xen)
        if kernel.pointer_size == 4:
            # A 32-bit kernel has no `syscall` path at all (its calls come by int 0x80
            # and sysenter): nothing would fault, and the other two cannot be made to.
            raise BadUsage("the exception trap breaks syscall's condition (EFER.SCE); a "
                           "32-bit kernel's calls come by int 0x80 and sysenter, whose "
                           "conditions (the IDT limit, SYSENTER_CS) QEMU's gdbstub cannot "
                           "write: use --capture breakpoints")
        write = getattr(target, "write_registers", None)
        if write is None:
            raise BadUsage(f"{target.description}: the exception trap needs a backend that "
                           "writes vCPU registers (a QEMU gdbstub); Xen has no #UD monitor "
                           "event")
        super().__init__(target, kernel, exception_plan(kernel), engine)
        self._write: Callable[[int, dict[str, int]], None] = write
        self._entries = {"x86_64": kernel.symbol("entry_SYSCALL_64")}
        if kernel.has_symbol("entry_SYSCALL_compat"):
            self._entries["i386"] = kernel.symbol("entry_SYSCALL_compat")
        self._efer: dict[int, int] = {}  # vCPU -> EFER as we found it
        self.fault_entry = next(p.address for p in self.points.values()
                                if p.role == "invalid-opcode")
        self.faults = 0  # #UDs that were system calls
        self.other_faults = 0  # #UDs left to the guest
        self.description = (f"exception trap (EFER.SCE cleared on every vCPU; "
                            f"{len(self.points)} trap points)")

    def start(self) -> None:
        super().start()  # paused, breakpoints in: now no syscall can run unseen
        for vcpu in range(self.target.vcpu_count):
            efer = self.target.registers(vcpu)["efer"]
            self._efer[vcpu] = efer
            self._write(vcpu, {"efer": efer & ~EFER_SCE})

    def select(self, numbers: dict[str, set[int]] | None) -> None:
        """Every ``syscall`` faults already: the engine's filter does the selecting."""

    def stop(self, give_up: Callable[[], bool], grace: float | None = None) -> CaptureReport:
        self.target.pause()
        for vcpu, efer in self._efer.items():
            self._write(vcpu, {"efer": efer | EFER_SCE})
        self._efer.clear()
        return super().stop(give_up, grace)

    def _handle(self, point: TrapPoint, vcpu: int) -> None:
        if point.role == "invalid-opcode":
            self._fault(vcpu)
        elif point.role == "sysret":
            registers = self.target.registers(vcpu)
            self._write(vcpu, sysret_effect(registers, point.abi == "x86_64", LINUX_SEGMENTS))
        else:
            super()._handle(point, vcpu)

    def _fault(self, vcpu: int) -> None:
        now = time.time()
        registers = self.target.registers(vcpu)
        cr3 = registers["cr3"]
        try:
            user = user_state_of_fault(self.target.read_virtual(cr3, registers["rsp"],
                                                                FRAME_SIZE))
            code = self.target.read_virtual(cr3, user.rip, len(SYSCALL_OPCODE))
        except MemoryReadError:
            user, code = None, b""
        if user is None or not user.from_user or code != SYSCALL_OPCODE:
            self.other_faults += 1
            return  # the guest's own #UD: its handler runs as if we were not here
        self.faults += 1
        abi = "i386" if user.cs == USER32_CS else "x86_64"
        identity = self._identity(vcpu, registers)
        read = self._user_reader(cr3, abi)
        if abi == "i386":
            # As entry_SYSCALL_compat takes them: ecx is lost, arg 2 is in ebp, arg 6 at [esp].
            stub_registers = {**registers, "rsp": user.rsp}
            nr = registers["rax"] & 0xFFFF_FFFF
            args = tuple(self._stub_arg(name, stub_registers, read)
                         for name in ARGS_COMPAT_SYSCALL)
        else:
            nr = registers["rax"]
            args = tuple(registers[name] for name in ARGS_X86_64)
        self.engine.feed(TrapRecord("entry", now, vcpu, identity, abi, "syscall", nr, args,
                                    read=read, stack_pointer=user.rsp, reads_live=True))
        self._write(vcpu, syscall_effect(user, self._entries[abi], LINUX_SEGMENTS))
