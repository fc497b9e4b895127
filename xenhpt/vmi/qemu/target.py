"""A live QEMU guest through its gdbstub: the lab's backend.

Registers, pause/resume and breakpoints go through the GDB remote protocol.
Physical memory (``memory.py``) comes either through the same socket (``Qqemu.PhyMemMode``,
about 3 MB/s) or, when QEMU was started with a shared ``memory-backend-file``
as the lab does, straight from that file mapped into our address space
(reads cost a memcpy; see docs/performance.md for the measurement).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import MemoryReadError, MsrUnavailable, TargetGone, XenhptError
from ..target import Trap
from ..x86.emulate import MAX_INSTRUCTION, UnsupportedInstruction, decode, emulate
from ..x86.fast_syscall import (
    EFER_SCE,
    FRAME_SIZE,
    SYSCALL_OPCODE,
    undo_fault,
    user_state_of_fault,
)
from ..x86.paging import PagedMemory, PageWalker, levels_from_registers
from .gdbremote import GdbRemote
from .memory import GdbPhysicalMemory, MappedRam

# QEMU's x86_64 'g' packet, in register-number order: (name, size in bytes).
_CONTROL = ("fs_base", "gs_base", "k_gs_base", "cr0", "cr2", "cr3", "cr4", "cr8", "efer")
_G_LAYOUT = (
    [(name, 8) for name in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")]
    + [("eflags", 4)]
    + [(seg, 4) for seg in ("cs", "ss", "ds", "es", "fs", "gs")]
    + [(name, 8) for name in _CONTROL]
)
# A vCPU that is not in 64-bit code (a 32-bit process, stopped in user mode) gets the
# control registers as 4 bytes each (QEMU's gdb_read_reg_cs64; general registers stay
# 8 bytes, masked to 32 bits): the whole reply is then 36 bytes shorter than this.
_G_LAYOUT_32 = [(name, 4 if name in _CONTROL else size) for name, size in _G_LAYOUT]
_FPU_BYTES = 8 * 10 + 8 * 4 + 16 * 16 + 4  # st0-7, fctrl..fop, xmm0-15, mxcsr
_G_BYTES_64 = sum(size for _, size in _G_LAYOUT) + _FPU_BYTES
REGISTER_NUMBER = {name: number for number, (name, _) in enumerate(_G_LAYOUT)}
_REGISTER_SIZE = dict(_G_LAYOUT)
# qemu-system-i386's 'g' packet (its i386 target description): every register 4 bytes,
# the general ones in gdb's i386 order (eax ecx edx ebx esp ebp esi edi). They are named
# here like their 64-bit counterparts, so the layers above read "rip", "rsp", "cr3" alike.
_G_LAYOUT_I386 = (
    [(name, 4) for name in ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "rip",
                            "eflags", "cs", "ss", "ds", "es", "fs", "gs")]
    + [(name, 4) for name in _CONTROL]
)
_I386_NUMBER = {name: number for number, (name, _) in enumerate(_G_LAYOUT_I386)}
_I386_SIZE = dict(_G_LAYOUT_I386)
# Written last, one by one: a new CS can change the mode, and with it the size QEMU
# expects for every field after it in a 'G' packet.
_SEGMENT_SWITCH = ("cs", "ss")


def _layout_of(raw: bytes, i386: bool = False) -> list[tuple[str, int]]:
    if i386:
        return _G_LAYOUT_I386
    return _G_LAYOUT if len(raw) >= _G_BYTES_64 else _G_LAYOUT_32


def _describes_i386(target_xml: bytes) -> bool:
    """Whether a gdbstub's target description is QEMU's i386 one (not x86-64)."""
    return b"<architecture>i386</architecture>" in target_xml


def _attach_clean(host: str, port: int) -> GdbRemote:
    """Connect to the gdbstub with no breakpoint left by an earlier debugger.

    QEMU keeps the breakpoints of a client that went away without removing them (a
    tracer killed with SIGKILL) and the protocol cannot list them: the first hit stops
    the VM for good, and a new client that does not know the address sees a stop it
    cannot step over. A detach (``D``) removes every breakpoint of the stub and resumes
    the VM, so we detach once and attach again: a few milliseconds for a clean stub.
    """
    remote = GdbRemote(host, port)
    try:
        remote.send("D")
        remote.receive(timeout=2.0)
    finally:
        remote.close()
    return GdbRemote(host, port)


class QemuTarget(PagedMemory):
    """:class:`~xenhpt.vmi.target.Target` over QEMU's gdbstub."""

    live = True

    def __init__(self, host: str, port: int, ram_file: Path | None = None,
                 memory_size: int | None = None, *, description: str | None = None,
                 capture_file: Path | None = None, attach_clean: bool = True) -> None:
        """``capture_file``: the xenhpt_capture plugin's shared file, when this QEMU runs
        it (the lab says so); ``description`` names the guest in messages;
        ``attach_clean=False`` keeps what a dead debugger left (the guardian repairs it
        before anything runs)."""
        self.remote = _attach_clean(host, port) if attach_clean else GdbRemote(host, port)
        self.description = description or f"qemu:{host}:{port}"
        self.capture_file = capture_file
        self._threads = self._list_threads()
        # qemu-system-i386 (a 32-bit guest) or qemu-system-x86_64: their 'g' packets differ.
        reply = self.remote.command("qXfer:features:read:target.xml:0,ffb")
        self.i386 = _describes_i386(reply)
        self._breakpoints: set[int] = set()
        self._registers: dict[int, dict[str, int]] = {}
        self._raw_registers: dict[int, bytes] = {}  # the whole 'g' reply, for 'G' writes
        self._selected: int | None = None
        # Execute the instruction under a breakpoint ourselves instead of stepping over it
        # (emulate.py decodes 64-bit code only: on an i386 guest, step over it).
        self.emulate_breakpoints = not self.i386
        self.emulated = 0
        self.stepped = 0
        # The vCPU that stopped on a breakpoint must step over it before running on.
        self._stopped_at: Trap | None = None
        # A breakpoint hit found while stepping over another one, not yet reported.
        self._pending: Trap | None = None
        self._closed = False
        self._paused_by_other = False  # a stop not ours was seen (see watch)
        if ram_file is not None:
            self._memory: MappedRam | GdbPhysicalMemory = MappedRam(ram_file)
        else:
            self._memory = GdbPhysicalMemory(self.remote, memory_size or (1 << 32))
        self.paging = PageWalker(self.read_physical)
        # QEMU stopped the VM when we connected: a good moment to learn the paging mode.
        self.paging.levels = levels_from_registers(self.registers(0))
        if attach_clean:
            self.resume()  # (otherwise the caller repairs first, then resumes)

    # -- memory ----------------------------------------------------------------------------

    @property
    def physical_size(self) -> int:
        return self._memory.physical_size

    def read_physical(self, address: int, size: int) -> bytes:
        if self.remote.running and isinstance(self._memory, GdbPhysicalMemory):
            # The stub answers memory packets only while the VM is stopped.
            self.pause()
            try:
                return self._memory.read_physical(address, size)
            finally:
                self.resume()
        return self._memory.read_physical(address, size)

    # -- vCPUs -----------------------------------------------------------------------------

    def _list_threads(self) -> list[int]:
        threads: list[int] = []
        reply = self.remote.command("qfThreadInfo")
        while reply.startswith(b"m"):
            threads += [int(t, 16) for t in reply[1:].decode().split(",") if t]
            reply = self.remote.command("qsThreadInfo")
        return threads or [1]

    @property
    def vcpu_count(self) -> int:
        return len(self._threads)

    def _select(self, vcpu: int) -> None:
        if self._selected != vcpu:
            self.remote.checked(f"Hg{self._threads[vcpu]:x}")
            self._selected = vcpu

    def registers(self, vcpu: int) -> dict[str, int]:
        self._require_stopped()
        cached = self._registers.get(vcpu)
        if cached is not None:
            return cached
        self._select(vcpu)
        raw = bytes.fromhex(self.remote.checked("g").decode())
        self._raw_registers[vcpu] = raw
        values: dict[str, int] = {}
        offset = 0
        for name, size in _layout_of(raw, self.i386):
            values[name] = int.from_bytes(raw[offset : offset + size], "little")
            offset += size
        self._registers[vcpu] = values
        return values

    def read_msr(self, vcpu: int, index: int) -> int:
        # Checked on QEMU 7.2 and 10.x: the x86-64 target description (the `g` packet)
        # ends at EFER, and neither `info registers` nor QMP shows LSTAR & co. Running a
        # `rdmsr` in the guest's place would need a vCPU at CPL 0 that is not halted, and
        # an idle guest's vCPUs are halted: not done.
        raise MsrUnavailable("QEMU's gdbstub exposes no MSRs (its x86-64 register set "
                             "ends at EFER)")

    def write_register(self, vcpu: int, name: str, value: int) -> None:
        self._require_stopped()
        self._select(vcpu)
        size = (_I386_SIZE if self.i386 else _REGISTER_SIZE)[name]
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little").hex()
        number = (_I386_NUMBER if self.i386 else REGISTER_NUMBER)[name]
        packet = f"P{number:x}={data}"
        reply = self.remote.checked(packet)
        if reply == b"":
            # QEMU before 8.0 answers P (unsupported) until the client has read the
            # target description, as gdb does on connecting; read it once and ask again.
            self.remote.command("qXfer:features:read:target.xml:0,ffb")
            reply = self.remote.checked(packet)
        if reply != b"OK":
            raise XenhptError(f"the gdbstub did not write {name} ({reply.decode()!r})")
        self._registers.pop(vcpu, None)
        self._raw_registers.pop(vcpu, None)

    # -- run control -----------------------------------------------------------------------

    def _require_stopped(self) -> None:
        if self.remote.running:
            raise XenhptError("internal: the guest must be paused to read its vCPUs")

    def pause(self) -> None:
        if not self.remote.running:
            return
        self.remote.send_interrupt()
        reply = self._wait_stop(timeout=self.remote.timeout)
        if reply is None:
            raise TargetGone("the guest did not stop when asked (QEMU hung?)")
        # Interrupting can land right on a breakpoint; remember it so resume steps over.
        self._note_stop(reply)

    def resume(self) -> None:
        if self.remote.running or self._pending is not None:
            return
        self._pending = self._step_over_breakpoint()
        if self._pending is not None:
            return
        self._invalidate()
        self.remote.send("c")
        self.remote.running = True

    def _invalidate(self) -> None:
        self._registers.clear()
        self._raw_registers.clear()
        self._selected = None
        self.paging.flush()

    def _step_over_breakpoint(self) -> Trap | None:
        """Step the stopped vCPU off its breakpoint; return a new hit if the step made one."""
        trap = self._stopped_at
        self._stopped_at = None
        if trap is None or trap.pc not in self._breakpoints:
            return None
        if self.emulate_breakpoints and self._emulate(trap):
            return None
        self.stepped += 1
        # QEMU would report the same PC forever: lift the breakpoint, step only this vCPU
        # (the others stay stopped, so none can slip past the lifted breakpoint), put it back.
        self.remote.checked(f"z0,{trap.pc:x},1")
        self._invalidate()
        self.remote.send(f"vCont;s:{self._threads[trap.vcpu]:x}")
        self.remote.running = True
        reply = self._wait_stop(timeout=self.remote.timeout)
        if reply is None:
            raise TargetGone("single-step over a breakpoint never finished")
        self.remote.checked(f"Z0,{trap.pc:x},1")
        stepped = self._trap_from(reply)
        if stepped.pc in self._breakpoints:
            # The stepped instruction jumped onto another breakpoint: that is a real hit.
            self._stopped_at = stepped
            return stepped
        return None

    def _emulate(self, trap: Trap) -> bool:
        """Execute the instruction under the breakpoint in the guest's place, if we can.

        A step-over costs a second debug stop (QEMU flushes its translated code on each),
        remove and re-insert packets: ~3.4 ms against ~0.6 ms for writing the registers
        the instruction would have produced (tools/bench.py measures both every run).
        """
        registers = self.registers(trap.vcpu)
        raw = self._raw_registers.get(trap.vcpu)
        dtb = registers["cr3"]
        try:
            code = self.paging.read(dtb, trap.pc, MAX_INSTRUCTION)
            form = decode(code, trap.pc)
            effect = emulate(form, code, trap.pc, registers)
            if effect.memory_write is not None:
                address, data = effect.memory_write
                self._memory.write_physical(self.paging.translate(dtb, address), data)
        except (UnsupportedInstruction, MemoryReadError):
            return False
        if raw is None:
            return False
        self._write_all(trap.vcpu, raw, effect.registers)
        self.emulated += 1
        return True

    def _write_all(self, vcpu: int, raw: bytes, values: dict[str, int]) -> None:
        """One 'G' packet: the vCPU's whole register block with ``values`` changed (works
        on every QEMU, where 'P' needs the target description read first), in the layout
        of the mode the vCPU is in; a changed CS or SS goes last, on its own (a new code
        segment may change the mode, and the sizes of the fields after it)."""
        blob = bytearray(raw)
        offset = 0
        for name, size in _layout_of(raw, self.i386):
            if name in values and name not in _SEGMENT_SWITCH:
                value = values[name] & ((1 << (8 * size)) - 1)
                blob[offset : offset + size] = value.to_bytes(size, "little")
            offset += size
        self._select(vcpu)
        self.remote.checked(f"G{blob.hex()}")
        self._registers.pop(vcpu, None)
        self._raw_registers.pop(vcpu, None)
        for name in _SEGMENT_SWITCH:
            if name in values:
                self.write_register(vcpu, name, values[name])

    def undo_exception_trap(self, fault_entry: int) -> int:
        """Repair what a killed exception-trap tracer left (``tracer/exception_capture.py``):
        EFER.SCE set again on every vCPU, and a vCPU stopped at the #UD entry
        ``fault_entry`` for a user ``syscall`` put back before the fault, so that the call
        runs again, for real, when the VM resumes. Returns how many vCPUs were repaired."""
        repaired = 0
        self.pause()
        for vcpu in range(self.vcpu_count):
            registers = self.registers(vcpu)
            values: dict[str, int] = {}
            if not registers["efer"] & EFER_SCE:
                values["efer"] = registers["efer"] | EFER_SCE
            if registers["rip"] == fault_entry:
                try:
                    user = user_state_of_fault(
                        self.read_virtual(registers["cr3"], registers["rsp"], FRAME_SIZE))
                    code = self.read_virtual(registers["cr3"], user.rip, len(SYSCALL_OPCODE))
                except MemoryReadError:
                    code = b""
                if code == SYSCALL_OPCODE and user.from_user:
                    values.update(undo_fault(user))
            if values:
                self.write_registers(vcpu, values)
                repaired += 1
        return repaired

    def write_registers(self, vcpu: int, values: dict[str, int]) -> None:
        """Set several registers of a stopped vCPU at once (segment selectors load their
        descriptors, ``efer`` its mode bits). A vCPU moved off the breakpoint it stopped
        at no longer needs to step over it."""
        self._require_stopped()
        self.registers(vcpu)
        self._write_all(vcpu, self._raw_registers[vcpu], values)
        stopped = self._stopped_at
        if (stopped is not None and stopped.vcpu == vcpu and "rip" in values
                and values["rip"] != stopped.pc):
            self._stopped_at = None

    def _wait_stop(self, timeout: float | None) -> bytes | None:
        while True:
            reply = self.remote.receive(timeout)
            if reply is None:
                return None
            if reply[:1] in (b"W", b"X"):
                self.remote.running = False
                raise TargetGone("the guest powered off or QEMU quit")
            if reply[:1] in (b"T", b"S"):
                self.remote.running = False
                self._invalidate()
                return reply
            # 'O' console output or stray replies while running: ignore.

    def _trap_from(self, reply: bytes) -> Trap:
        thread = self._threads[0]
        for part in reply[3:].split(b";"):
            if part.startswith(b"thread:"):
                thread = int(part[7:].split(b".")[-1], 16)
        vcpu = self._threads.index(thread) if thread in self._threads else 0
        pc = self.registers(vcpu)["rip"]
        return Trap(vcpu=vcpu, pc=pc, reason="breakpoint" if pc in self._breakpoints else "stop")

    def _note_stop(self, reply: bytes) -> Trap:
        trap = self._trap_from(reply)
        self._stopped_at = trap
        return trap

    def wait_for_trap(self, timeout: float | None) -> Trap | None:
        if not self.remote.running:
            self.resume()
        if self._pending is not None:
            trap, self._pending = self._pending, None
            return trap
        reply = self._wait_stop(timeout)
        if reply is None:
            return None
        return self._note_stop(reply)

    def watch(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` for news of the guest, resuming nothing (a capture with no
        breakpoint: the plugin). QEMU tells a gdb client of every stop, ours or not: one
        that is not ours is somebody's pause (QMP ``stop``, ``virsh suspend``), and
        undoing it would run a guest its operator froze, say for a memory dump. True if
        the guest was paused; TargetGone if it ended."""
        reply = self._wait_stop(timeout)
        if reply is None:
            return False
        self._paused_by_other = True  # (close() must not detach: that resumes the VM)
        return True

    # -- breakpoints -----------------------------------------------------------------------

    def insert_breakpoint(self, address: int) -> None:
        was_running = self.remote.running
        self.pause()
        self.remote.checked(f"Z0,{address:x},1")
        self._breakpoints.add(address)
        if was_running:
            self.resume()

    def remove_breakpoint(self, address: int) -> None:
        was_running = self.remote.running
        self.pause()
        if address in self._breakpoints:
            self.remote.checked(f"z0,{address:x},1")
            self._breakpoints.discard(address)
        if was_running:
            self.resume()

    @property
    def breakpoints(self) -> frozenset[int]:
        return frozenset(self._breakpoints)

    def release_stale_monitor(self) -> None:
        """Nothing to do: QEMU keeps no monitor state of a client (its breakpoints go
        with the detach that every attach starts with)."""

    def close(self) -> None:
        """Remove our breakpoints and detach; QEMU resumes the VM on detach."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._paused_by_other and not self._breakpoints:
                return  # closing the connection leaves the VM as it is; "D" would resume it
            self.pause()
            for address in list(self._breakpoints):
                self.remote.checked(f"z0,{address:x},1")
            self._breakpoints.clear()
            self.remote.send("D")
            self.remote.receive(timeout=2.0)
        except (TargetGone, TimeoutError, OSError):
            pass
        finally:
            self.remote.close()
            if isinstance(self._memory, MappedRam):
                self._memory.close()
