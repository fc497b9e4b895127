"""Capture by breakpoints: the source that feeds the engine from a live Target.

It works on any backend that can set breakpoints (QEMU gdbstub today, LibVMI INT3 on
Xen); it reads registers, asks ``linux`` who runs, and hands :class:`TrapRecord`
objects to the engine while the guest is still stopped, so the decoder reads guest
memory as it was at the trap.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import BadUsage, MemoryReadError
from ..linux.current import CurrentTask
from ..linux.kernel import Kernel
from ..linux.tasks import TaskReader
from ..syscalls.render import signed
from ..vmi.target import Target
from .engine import SyscallEngine
from .records import TaskIdentity, TrapRecord
from .source import CaptureReport
from .trappoints import (
    PT_REGS_ARGUMENTS,
    TrapPoint,
    entry_stubs,
    first_argument,
    selected_handlers,
    stub_of_return,
    user_stack_pointer,
)

MASK32 = 0xFFFF_FFFF
UNKNOWN_TASK = TaskIdentity(task=0, pid=-1, tid=-1, ppid=-1, comm=b"?")


@dataclass
class CaptureStats:
    traps: int = 0  # breakpoint stops handled
    stray: int = 0  # stops at an address that is not ours (e.g. a pause)
    unknown_task: int = 0


class BreakpointCapture:
    def __init__(self, target: Target, kernel: Kernel, points: dict[int, TrapPoint],
                 engine: SyscallEngine) -> None:
        self.target = target
        self.kernel = kernel
        self.points = dict(points)
        self.engine = engine
        self.tasks = TaskReader(kernel)
        self.current = CurrentTask(kernel, self.tasks)
        self.stats = CaptureStats()
        profile = kernel.profile
        # (an i386 kernel's pt_regs has no r8..r15)
        self._pt_regs = {name: profile.offset("pt_regs", name) for name in (
            "di", "si", "dx", "r10", "r8", "r9", "bx", "cx", "bp", "ax", "orig_ax", "sp")
            if profile.has_field("pt_regs", name)}
        self._argument = first_argument(kernel)  # where pt_regs is at the exit function
        self._bits = 8 * kernel.pointer_size
        # Selective mode: return addresses armed while calls are in flight, per task.
        self._returns: dict[int, int] = {}  # address -> number of tasks waiting there
        self._waiting: dict[int, int] = {}  # task address -> its return address
        self._armed = False
        self._stubs = entry_stubs(kernel)
        self.description = f"{len(self.points)} trap points"
        self.plugin_file = None
        self.fault_entry: int | None = None

    # -- running -------------------------------------------------------------------------

    def start(self) -> None:
        """Insert every trap at once while the guest is paused (run() resumes it)."""
        self.target.pause()
        for address in self.points:
            self.target.insert_breakpoint(address)
        self._armed = True

    def refilter(self) -> None:
        """Breakpoints trap every task alike: the engine's filter is all there is."""

    def select(self, numbers: dict[str, set[int]] | None) -> None:
        """A full trace traps every call already (the engine's filter does the rest); a
        selective one arms the handlers of the new selection and disarms the others."""
        full = any(p.role == "entry-stub" for p in self.points.values())
        if full:
            return
        if numbers is None:
            raise BadUsage("this trace traps only its selected calls' handlers: to trace "
                           "every call, start a trace without -e")
        wanted = selected_handlers(self.kernel, numbers)
        if wanted is None:
            raise BadUsage("a call of this selection has no handler this kernel names: "
                           "start a trace with it from the beginning (it traps every call)")
        self.target.pause()  # (run() resumes it at the next wait)
        for address in wanted.keys() - self.points.keys():
            if address not in self._returns:
                self.target.insert_breakpoint(address)
        for address in self.points.keys() - wanted.keys():
            if address not in self._returns:
                self.target.remove_breakpoint(address)
        self.points = wanted
        self.description = f"{len(self.points)} trap points"

    def run(self, should_stop: Callable[[], bool], poll: float = 0.2) -> None:
        """Handle traps until ``should_stop()`` says so (checked at least every ``poll`` s)."""
        if not self._armed:
            self.start()
        while not should_stop():
            trap = self.target.wait_for_trap(timeout=poll)
            if trap is None:
                continue
            point = self.points.get(trap.pc)
            if point is None and trap.pc in self._returns:
                point = TrapPoint(trap.pc, "return")
            if point is None:
                self.stats.stray += 1
                continue
            self.stats.traps += 1
            self._handle(point, trap.vcpu)

    def stop(self, give_up: Callable[[], bool], grace: float | None = None) -> CaptureReport:
        """Remove every trap of ours; the guest stays paused until the target is closed.

        Nothing waits to be decoded: each trap was handed to the engine as it came.
        """
        self.target.pause()
        for address in set(self.points) | set(self._returns):
            self.target.remove_breakpoint(address)
        self._returns.clear()
        self._waiting.clear()
        self._armed = False
        return CaptureReport("breakpoints", events=self.stats.traps,
                             unknown_task=self.stats.unknown_task)

    # -- one trap ------------------------------------------------------------------------

    def _identity(self, vcpu: int, registers: dict[str, int]) -> TaskIdentity:
        address = self.current.address(vcpu, registers)
        if address is None:
            self.stats.unknown_task += 1
            return UNKNOWN_TASK
        try:
            task = self.tasks.read(address)
        except MemoryReadError:
            self.stats.unknown_task += 1
            return UNKNOWN_TASK
        return TaskIdentity(task=address, pid=task.pid, tid=task.tid, ppid=task.ppid,
                            comm=task.comm, start_time=task.start_time)

    def _user_reader(self, cr3: int, abi: str | None) -> Callable[[int, int], bytes]:
        mask = MASK32 if abi == "i386" else 0xFFFF_FFFF_FFFF_FFFF
        target = self.target

        def read(address: int, size: int) -> bytes:
            return target.read_virtual(cr3, address & mask, size)

        return read

    def _pt_regs_value(self, regs_address: int, name: str) -> int:
        return self.kernel.pointer(regs_address + self._pt_regs[name])

    def _handle(self, point: TrapPoint, vcpu: int) -> None:
        now = time.time()
        registers = self.target.registers(vcpu)
        identity = self._identity(vcpu, registers)
        if point.role == "entry-stub":
            read = self._user_reader(registers["cr3"], point.abi)
            if point.abi == "i386":
                nr = registers["rax"] & MASK32
                args = tuple(self._stub_arg(name, registers, read) for name in
                             point.arg_registers)
            else:
                nr = registers["rax"]
                args = tuple(registers[name] for name in point.arg_registers)
            try:
                user_sp: int | None = user_stack_pointer(
                    point, registers, self.kernel.pointer, self.kernel.pointer_size)
            except MemoryReadError:
                user_sp = None
            self.engine.feed(TrapRecord("entry", now, vcpu, identity, point.abi,
                                         point.mechanism, nr, args, read=read,
                                         stack_pointer=user_sp, reads_live=True))
        elif point.role == "exit":
            regs = registers[self._argument]
            try:
                nr = signed(self._pt_regs_value(regs, "orig_ax"), self._bits)
                ret = signed(self._pt_regs_value(regs, "ax"), self._bits)
            except MemoryReadError:
                return
            read = self._user_reader(registers["cr3"], self._abi_of(identity))
            self.engine.feed(TrapRecord("exit", now, vcpu, identity, None, None, nr,
                                        ret=ret, read=read, reads_live=True))
        elif point.role == "syscall-function":
            self._function_entry(point, vcpu, registers, identity, now)
        elif point.role == "return":
            self._function_return(point, vcpu, registers, identity, now)
        elif point.role == "exec-refresh":
            self.engine.feed(TrapRecord("refresh", now, vcpu, identity, None, None, -1,
                                        read=self._user_reader(registers["cr3"],
                                                               self._abi_of(identity))))

    def _abi_of(self, identity: TaskIdentity) -> str | None:
        pending = self.engine.pending.get(identity.task)
        return pending.entry.abi if pending else None

    def _stub_arg(self, name: str, registers: dict[str, int],
                  read: Callable[[int, int], bytes]) -> int:
        if name in ("[rsp]", "[rbp]"):
            try:
                return struct.unpack("<I", read(registers[name[1:-1]] & MASK32, 4))[0]
            except MemoryReadError:
                return 0
        return registers[name] & MASK32

    def _function_entry(self, point: TrapPoint, vcpu: int, registers: dict[str, int],
                        identity: TaskIdentity, now: float) -> None:
        regs = registers[self._argument]  # __x64_sys_*(const struct pt_regs *regs)
        abi, mechanism = point.abi, None
        word = self.kernel.pointer_size
        try:  # the entry stub's call to its C function sits just below pt_regs
            stub = stub_of_return(self._stubs, self.kernel.pointer(regs - word))
        except MemoryReadError:
            stub = None
        if stub is not None:
            mechanism, abi = stub
        arg_registers = PT_REGS_ARGUMENTS[abi]
        try:
            nr = self._pt_regs_value(regs, "orig_ax")
            args = tuple(self._pt_regs_value(regs, name) for name in arg_registers)
            user_sp = self._pt_regs_value(regs, "sp")
            return_address = self.kernel.pointer(registers["rsp"])
        except MemoryReadError:
            return
        if abi == "i386":
            nr &= MASK32
            args = tuple(a & MASK32 for a in args)
        read = self._user_reader(registers["cr3"], abi)
        waits = self.engine.feed(TrapRecord("entry", now, vcpu, identity, abi, mechanism, nr,
                                            args, read=read, stack_pointer=user_sp,
                                            reads_live=True))
        if waits and identity.task:
            self._arm_return(identity.task, return_address)

    def _arm_return(self, task: int, address: int) -> None:
        self._disarm_return(task)
        self._waiting[task] = address
        count = self._returns.get(address, 0)
        if count == 0 and address not in self.points:
            self.target.insert_breakpoint(address)
        self._returns[address] = count + 1

    def _disarm_return(self, task: int) -> None:
        address = self._waiting.pop(task, None)
        if address is None:
            return
        count = self._returns.get(address, 0) - 1
        if count <= 0:
            self._returns.pop(address, None)
            if address not in self.points:
                self.target.remove_breakpoint(address)
        else:
            self._returns[address] = count

    def _function_return(self, point: TrapPoint, vcpu: int, registers: dict[str, int],
                         identity: TaskIdentity, now: float) -> None:
        if self._waiting.get(identity.task) != point.address:
            return  # another task passing the same return site
        self._disarm_return(identity.task)
        pending = self.engine.pending.get(identity.task)
        read = self._user_reader(registers["cr3"], pending.entry.abi if pending else None)
        self.engine.feed(TrapRecord("exit", now, vcpu, identity, None, None, -1,
                                    ret=signed(registers["rax"], self._bits), read=read,
                                    reads_live=True))
