"""A live Xen HVM/PVH domain through LibVMI: the Dom0 backend behind ``xen:NAME|DOMID``.

LibVMI is initialised partially (``vmi_init``: Xen driver, no OS profile): this backend
knows nothing about Linux. Physical memory and vCPU registers come from LibVMI; virtual
addresses are walked by our own :class:`~xenhpt.vmi.x86.paging.PageWalker`, as for QEMU.

Traps use what stock Xen gives a Dom0 tool (DESIGN.md, "LibVMI"): an INT3 byte written at
each trap address, reported as a monitor event with reinjection off. The guest does not
execute the instruction the 0xCC displaced; the tracer executes it for the guest
(:mod:`~xenhpt.vmi.x86.emulate`): the new GPRs, ``rip`` and ``rflags`` go back with the event
response and a ``push``'s store through guest memory. A ``swapgs`` is never executed for
the guest (that would need ``set_vcpureg``, a full HVM context round trip that corrupted the
gs bases in the lab): the trap goes on the instruction after it. No single-step is needed,
which AMD hosts lack. ``XENHPT_XEN_TRAP=sldt`` writes ``sldt %eax`` instead of INT3 and
takes DESCRIPTOR_ACCESS events: QEMU's TCG (the Xen lab) never reports INT3 to Xen.

At a trap the callback pauses the domain, so the tracer reads registers and memory as
they were at the breakpoint; :meth:`XenTarget.registers` returns that snapshot (``rip`` =
the breakpoint) although the vCPU has already been moved past the instruction.

``MSR_ALL`` write events (filtered by :mod:`~xenhpt.vmi.xen.msr`) follow a guest that
moves LSTAR/CSTAR/SYSENTER_EIP: the breakpoint moves to the new entry point and its hits
are reported at the address the tracer armed. Teardown puts every byte back on every exit
path (``close``, ``atexit``); a tracer killed outright leaves a state file that the next
attach uses to repair the code (:mod:`~xenhpt.vmi.xen.breakpoints`).
"""

from __future__ import annotations

import atexit
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import MemoryReadError, MsrUnavailable, TargetGone, XenhptError
from ..target import KernelTables, Trap
from ..x86.emulate import MAX_INSTRUCTION, emulate
from ..x86.paging import PagedMemory, PageWalker, dtb_from_cr3, levels_from_cr4
from .breakpoints import TRAP_PATCHES, BreakpointBook, repair_leftovers, state_path
from .monitor import release_stale_monitor
from .msr import MSR_CSTAR, MSR_EFER, MSR_LSTAR, MSR_SYSENTER_EIP, MsrChange, MsrWatch

log = logging.getLogger("xenhpt.xen")

# LibVMI's register ids (libvmi.h); the Python bindings export only some of them, and not
# SHADOW_GS (68), which holds KERNEL_GS_BASE: the kernel per-CPU base at a syscall entry.
REGISTER_IDS = {
    "rax": 0, "rbx": 1, "rcx": 2, "rdx": 3, "rbp": 4, "rsi": 5, "rdi": 6, "rsp": 7,
    "rip": 8, "eflags": 9,
    "r8": 10, "r9": 11, "r10": 12, "r11": 13, "r12": 14, "r13": 15, "r14": 16, "r15": 17,
    "cr0": 18, "cr2": 19, "cr3": 20, "cr4": 21,
    "cs": 29, "ds": 30, "es": 31, "fs": 32, "gs": 33, "ss": 34,
    "fs_base": 50, "gs_base": 51, "k_gs_base": 68, "efer": 74,
}
SHADOW_GS = REGISTER_IDS["k_gs_base"]
MSR_IDS = {MSR_LSTAR: 71, MSR_CSTAR: 72, MSR_SYSENTER_EIP: 67, MSR_EFER: 74}  # -> LibVMI reg id
MSR_ALL = 76
SWAPGS = bytes.fromhex("0f01f8")
# Our register name -> field of the event's x86_registers_t (the part the response sets).
EVENT_FIELDS = {name: name for name in (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
    "r12", "r13", "r14", "r15", "rip")} | {"eflags": "rflags"}
EVENT_SNAPSHOT = {**EVENT_FIELDS, "cr0": "cr0", "cr2": "cr2", "cr3": "cr3", "cr4": "cr4",
                  "fs_base": "fs_base", "gs_base": "gs_base", "efer": "msr_efer"}
# What the event does not carry: read once per trap with get_vcpureg.
TRAP_EXTRA = ("k_gs_base", "cs", "ss")

# The paper's exception traps (Xiong et al.) and why a Dom0 tool cannot have them on Xen.
EXCEPTION_TRAPS = {
    "efer-sce": "clearing EFER.SCE makes SYSCALL raise #UD",
    "sysenter-cs": "SYSENTER_CS=0 makes SYSENTER raise #GP",
}
STOCK_XEN_EVENTS = ("INT3, debug exceptions, CPUID, CR0/CR3/CR4 and MSR writes, "
                    "single-step (Intel only), memory access (Intel EPT only)")


def exception_trap_unavailable(method: str) -> XenhptError:
    """The error for the paper's #UD/#GP trap methods, which stock Xen cannot deliver."""
    why = EXCEPTION_TRAPS.get(method, f"the {method!r} method traps an exception")
    return XenhptError(
        f"trap method {method!r} is not available on Xen: {why}, but stock Xen reports no "
        f"#UD/#GP exceptions to a Dom0 monitor (its vm_events are {STOCK_XEN_EVENTS}); "
        "xenhpt traps the entry points with INT3 instead")


class XenTarget(PagedMemory):
    """:class:`~xenhpt.vmi.target.Target` over LibVMI for a live Xen HVM/PVH domain.

    ``connect(events)`` returns a LibVMI-like object for the domain (partial init; with
    ``INIT_EVENTS`` when ``events``): the target first attaches without events, so ``ps``
    never opens the domain's monitor ring, and reattaches with events on the first
    breakpoint. ``responses`` is LibVMI's ``EventResponse`` (a stand-in in tests).
    """

    live = True
    capture_file: Path | None = None

    def __init__(self, connect: Callable[[bool], Any], name: str, domid: int, *,
                 responses: Any = None, state_dir: Path | None = None,
                 cr3_events: bool = False, trap: str = "int3",
                 alive: Callable[[], bool] | None = None) -> None:
        if trap not in TRAP_PATCHES:
            raise XenhptError(f"xen: unknown trap instruction {trap!r} "
                              f"(XENHPT_XEN_TRAP: {' or '.join(TRAP_PATCHES)})")
        self.trap = trap
        self._patch = TRAP_PATCHES[trap]
        self._connect = connect
        self.name = name
        self.domid = domid
        self.description = f"xen:{name} (domid {domid})"
        self._responses = responses
        # Whether domain ``domid`` still exists (xenstore, from open_xen): LibVMI's listen
        # just times out once it is destroyed or rebooted (a reboot is a new domid).
        self._alive = alive or (lambda: True)
        self._next_alive_check = 0.0
        self._gone = False
        self._cr3_events = cr3_events
        self.vmi = connect(False)
        self._events: list[Any] = []
        self._pauses = 0  # how many times we paused the domain (Xen counts them)
        self._queue: deque[tuple[Trap, dict[str, int]]] = deque()
        self._registers: dict[int, dict[str, int]] = {}
        self._failure: BaseException | None = None
        self._aliases: dict[int, int] = {}  # followed entry point -> the address armed
        # sldt traps placed after a swapgs the guest runs itself: trap address -> the
        # address the tracer asked for (its hits are reported there, with the gs bases
        # swapped back so they look as they did before the swapgs).
        self._after_swapgs: set[int] = set()
        self._closed = False
        self._repaired_leftovers = False
        self.msr = MsrWatch()
        self.msr_changes: list[MsrChange] = []
        self.cr3_writes = 0
        self.paging = PageWalker(self.read_physical)
        # Kernel addresses a CR3 does not map (a user PGD): the guest OS's rule, handed
        # over by set_kernel_paging; the CR3 as it is until then.
        self._kernel_tables: KernelTables = dtb_from_cr3
        self.book = BreakpointBook(self, name, domid, state_path(name, state_dir))
        self.pause()
        try:
            self.paging.levels = levels_from_cr4(self.registers(0)["cr4"])
            repaired = repair_leftovers(self, domid, self.book.state_file)
            self._repaired_leftovers = repaired > 0
            if repaired:
                log.warning("xenhpt: %s: restored %d code byte(s) left by a tracer that "
                            "was killed", self.description, repaired)
        finally:
            self.resume()
        atexit.register(self.close)

    # -- memory ----------------------------------------------------------------------------

    @property
    def physical_size(self) -> int:
        return int(self.vmi.get_max_physical_address())

    def read_physical(self, address: int, size: int) -> bytes:
        if address < 0 or size < 0:
            raise MemoryReadError(address, "negative guest-physical address or size")
        if size == 0:
            return b""
        try:
            data, count = self.vmi.read_pa(address, size)
        except Exception:  # LibvmiError: the page is not mapped in this domain
            raise MemoryReadError(address, "guest-physical address not readable") from None
        if count != size:
            raise MemoryReadError(address + count, "short guest-physical read")
        return bytes(data)

    def write_physical(self, address: int, data: bytes) -> None:
        try:
            written = self.vmi.write_pa(address, bytes(data))
        except Exception:
            raise MemoryReadError(address, "guest-physical address not writable") from None
        if written != len(data):
            raise MemoryReadError(address + written, "short guest-physical write")

    def set_kernel_paging(self, levels: int, kernel_tables: KernelTables) -> None:
        super().set_kernel_paging(levels, kernel_tables)
        self._kernel_tables = kernel_tables  # INT3s go in by physical address

    def _kernel_physical(self, cr3: int, address: int) -> int:
        """Physical address of kernel ``address``: CR3 as it is, else the kernel's tables
        for it (the guest OS's rule, e.g. Linux's KPTI twin: ``set_kernel_paging``)."""
        try:
            return self.paging.translate(cr3, address)
        except MemoryReadError:
            return self.paging.translate(self._kernel_tables(cr3), address)

    def _write_virtual(self, cr3: int, address: int, data: bytes) -> None:
        while data:
            chunk = min(len(data), 0x1000 - (address & 0xFFF))
            self.write_physical(self._kernel_physical(cr3, address), data[:chunk])
            address, data = address + chunk, data[chunk:]

    # -- vCPUs -----------------------------------------------------------------------------

    @property
    def vcpu_count(self) -> int:
        return int(self.vmi.get_num_vcpus())

    def registers(self, vcpu: int) -> dict[str, int]:
        cached = self._registers.get(vcpu)
        if cached is None:
            cached = {name: int(self.vmi.get_vcpureg(number, vcpu))
                      for name, number in REGISTER_IDS.items()}
            self._registers[vcpu] = cached
        return cached

    def read_msr(self, vcpu: int, index: int) -> int:
        """LibVMI reads the entry MSRs (and EFER) from Xen's HVM context."""
        if index not in MSR_IDS:
            raise MsrUnavailable(f"LibVMI has no register id for MSR {index:#x}")
        return int(self.vmi.get_vcpureg(MSR_IDS[index], vcpu))

    def write_register(self, vcpu: int, name: str, value: int) -> None:
        if name not in REGISTER_IDS:
            raise XenhptError(f"register {name!r} cannot be written through LibVMI")
        self.vmi.set_vcpureg(value & ((1 << 64) - 1), REGISTER_IDS[name], vcpu)
        self._registers.pop(vcpu, None)

    # -- run control -----------------------------------------------------------------------

    def pause(self) -> None:
        if self._pauses == 0:
            self.vmi.pause_vm()
            self._pauses = 1

    def resume(self) -> None:
        if self._queue:
            return  # traps not yet handed out: the guest stays as they saw it
        self._registers.clear()
        self.paging.flush()
        while self._pauses > 0:
            self.vmi.resume_vm()
            self._pauses -= 1

    def wait_for_trap(self, timeout: float | None) -> Trap | None:
        if not self._queue:
            self.resume()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._queue:
            self._raise_failure()
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return None
            if not self._events:
                time.sleep(min(left, 0.1))  # nothing armed: nothing can trap
                continue
            try:
                self.vmi.listen(max(1, min(int(left * 1000), 1000)))
            except Exception:  # LibvmiError: a domain torn down under the ring, or worse
                self._check_alive(force=True)
                raise
            if not self._queue:
                self._check_alive()
        trap, snapshot = self._queue.popleft()
        self._registers = {trap.vcpu: snapshot}
        self.paging.flush()
        return trap

    def _check_alive(self, force: bool = False, every: float = 2.0) -> None:
        """Raise :class:`TargetGone` once the domain no longer exists (checked at most
        every ``every`` seconds while no trap comes)."""
        now = time.monotonic()
        if not force and now < self._next_alive_check:
            return
        self._next_alive_check = now + every
        if not self._alive():
            self._gone = True
            raise TargetGone(f"{self.description} is gone (destroyed, or rebooted as a new "
                             "domain): its memory went with it, nothing to put back")

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise XenhptError(f"{self.description}: handling a trap failed: {failure}")

    # -- breakpoints -----------------------------------------------------------------------

    def insert_breakpoint(self, address: int) -> None:
        self._ensure_events()
        was_paused = self._pauses > 0
        self.pause()
        try:
            cr3 = self.registers(0)["cr3"]
            trap_at = address
            code = self._code(cr3, address)
            if code.startswith(SWAPGS):
                # Executing swapgs for the guest needs set_vcpureg (a full HVM context
                # round trip that, in the Xen lab, left both gs bases = kernel: a double
                # fault at the next entry): let the guest run it, trap the next one.
                trap_at = address + len(SWAPGS)
                code = self._code(cr3, trap_at)
            physical = self._kernel_physical(cr3, trap_at)
            if len(self._patch) > 1:
                self._check_no_vcpu_inside(trap_at, code)
            self.book.insert(trap_at, physical, code, self._patch)
            if trap_at != address:
                self._aliases[trap_at] = address
                self._after_swapgs.add(trap_at)
        finally:
            if not was_paused:
                self.resume()

    def _code(self, cr3: int, address: int) -> bytes:
        dtb = self._kernel_tables(cr3) if self._needs_kernel_dtb(cr3, address) else cr3
        return self.read_virtual(dtb, address, MAX_INSTRUCTION)

    def _reported(self, address: int) -> int:
        """The address the tracer armed for a trap that fired at ``address``."""
        seen = set()
        while address in self._aliases and address not in seen:
            seen.add(address)
            address = self._aliases[address]
        return address

    def _check_no_vcpu_inside(self, address: int, code: bytes) -> None:
        """A multi-byte trap must not cut an instruction a paused vCPU will resume at."""
        from .breakpoints import displaced_steps

        steps = displaced_steps(code, address, len(self._patch))
        end = steps[-1].address + len(steps[-1].code)
        for vcpu in range(self.vcpu_count):
            rip = self.registers(vcpu)["rip"]
            if address < rip < end:
                raise XenhptError(f"cannot trap {address:#x} now: vCPU {vcpu} is stopped "
                                  f"inside it (rip {rip:#x}); try again")

    def _needs_kernel_dtb(self, cr3: int, address: int) -> bool:
        try:
            self.paging.translate(cr3, address + MAX_INSTRUCTION - 1)
            return False
        except MemoryReadError:
            return True

    def remove_breakpoint(self, address: int) -> None:
        for alias, armed in list(self._aliases.items()):
            if armed == address:
                self.book.remove(alias)
                del self._aliases[alias]
                self._after_swapgs.discard(alias)
        self.book.remove(address)

    @property
    def breakpoints(self) -> frozenset[int]:
        return frozenset(self._reported(address) for address in self.book.armed)

    def insert_exception_trap(self, method: str) -> None:
        """The paper's EFER.SCE (#UD) / SYSENTER_CS (#GP) traps: refused on stock Xen."""
        raise exception_trap_unavailable(method)

    # -- events ----------------------------------------------------------------------------

    def _ensure_events(self) -> None:
        if self._events:
            return
        from libvmi import MSR, X86Reg
        from libvmi.event import Event, EventResponse, EventType, IntEvent, RegAccess, RegEvent

        class DescriptorEvent(Event):  # the bindings have no class for this event type
            type = EventType.DESCRIPTOR_ACCESS

            def to_cffi(self) -> Any:
                super().to_cffi()
                return self._cffi_event

        self._responses = self._responses or EventResponse
        vcpus = self.vcpu_count  # (asked before the handle goes)
        # Reattach with INIT_EVENTS (the first attach left the monitor ring alone).
        pauses, self._pauses = self._pauses, 0
        for _ in range(pauses):
            self.vmi.resume_vm()
        self.vmi.destroy()
        try:
            self.vmi = self._connect(True)
        except XenhptError:
            if not self._repaired_leftovers:
                self.vmi = self._connect(False)  # keep a handle that close() can use
                for _ in range(pauses):
                    self.pause()
                raise
            # We just put back a killed tracer's bytes: the ring in the way is its own.
            log.warning("xenhpt: %s: taking down the monitor ring of the tracer that was "
                        "killed", self.description)
            release_stale_monitor(self.domid, vcpus)
            self.vmi = self._connect(True)
        for _ in range(pauses):
            self.pause()
        trap = (IntEvent(self._on_int3) if self.trap == "int3"
                else DescriptorEvent(self._on_descriptor))
        events = [trap, RegEvent(MSR.ALL, RegAccess.W, self._on_msr)]
        if self._cr3_events:
            events.append(RegEvent(X86Reg.CR3, RegAccess.W, self._on_cr3))
        for event in events:
            self.vmi.register_event(event)
            self._events.append(event)
        for vcpu in range(self.vcpu_count):
            for msr, number in MSR_IDS.items():
                self.msr.seed(vcpu, msr, int(self.vmi.get_vcpureg(number, vcpu)))

    def _on_int3(self, vmi: Any, event: Any) -> Any:
        """INT3 callback: ours -> execute the displaced instruction; else give it back."""
        return self._on_trap(event, int3=True)

    def _on_descriptor(self, vmi: Any, event: Any) -> Any:
        """DESCRIPTOR_ACCESS callback (the ``sldt`` trap): ours -> execute the displaced
        instructions; the guest's own SGDT/SIDT/SLDT/STR/L*: let Xen emulate them."""
        return self._on_trap(event, int3=False)

    def _on_trap(self, event: Any, int3: bool) -> Any:
        try:
            return self._handle_trap(event, int3)
        except BaseException as exc:  # noqa: BLE001 - must not cross into C: the vCPU would hang
            self._failure = exc
            if int3:
                event.reinject = 0
            address = int(event.x86_regs.rip)
            try:  # lift the byte so the vCPU re-executes the original instruction
                self.book.remove(address)
            except BaseException:  # noqa: BLE001
                pass
            return self._responses.NONE

    def _handle_trap(self, event: Any, int3: bool = True) -> Any:
        regs = event.x86_regs
        address = int(regs.rip)
        breakpoint_ = self.book.armed.get(address)
        if breakpoint_ is None:
            # Lifted while this event was queued: run the original instruction. Else it
            # is the guest's own INT3 (kprobes, a debugger inside): deliver it; or its own
            # descriptor-table instruction: Xen emulates it.
            if int3:
                event.reinject = 0 if address in self.book.retired else 1
                return self._responses.NONE
            if address in self.book.retired:
                return self._responses.NONE
            return self._responses.EMULATE
        if int3:
            event.reinject = 0
        self.pause()
        vcpu = int(event.vcpu_id)
        snapshot = {name: int(getattr(regs, field)) for name, field in EVENT_SNAPSHOT.items()}
        for name in TRAP_EXTRA:
            snapshot[name] = int(self.vmi.get_vcpureg(REGISTER_IDS[name], vcpu))
        state = dict(snapshot)
        changed: dict[str, int] = {}
        for step in breakpoint_.steps:
            effect = emulate(step.form, step.code, step.address, state)
            if effect.memory_write is not None:
                self._write_virtual(snapshot["cr3"], *effect.memory_write)
            state.update(effect.registers)
            changed.update(effect.registers)
        for name, value in changed.items():
            if name in EVENT_FIELDS:
                setattr(regs, EVENT_FIELDS[name], value)
            else:
                self.vmi.set_vcpureg(value, REGISTER_IDS[name], vcpu)
        pc = self._reported(address)
        reported = {**snapshot, "rip": pc}
        if address in self._after_swapgs:  # as they were before the guest's swapgs
            reported["gs_base"], reported["k_gs_base"] = snapshot["k_gs_base"], \
                snapshot["gs_base"]
        self._queue.append((Trap(vcpu=vcpu, pc=pc, reason="breakpoint"), reported))
        return self._responses.SET_REGISTERS

    def _on_msr(self, vmi: Any, event: Any) -> Any:
        try:
            change = self.msr.on_write(int(event.vcpu_id), int(event.msr), int(event.value),
                                       int(event.previous))
            if change is not None:
                self._follow(change)
        except BaseException as exc:  # noqa: BLE001 - see _on_int3
            self._failure = exc
        return self._responses.NONE

    def _follow(self, change: MsrChange) -> None:
        """Report an entry-point move and move our breakpoint with it."""
        self.msr_changes.append(change)
        log.warning("xenhpt: %s: %s", self.description, change.describe())
        if not change.entry_moved:
            return
        armed = self._reported(change.old)
        if armed not in self.breakpoints or change.new in self.breakpoints:
            return
        try:
            self.insert_breakpoint(change.new)
        except XenhptError as exc:
            log.warning("xenhpt: %s: cannot follow %s to %#x: %s", self.description,
                        change.name, change.new, exc)
            return
        self._aliases[change.new] = armed
        log.warning("xenhpt: %s: now trapping %#x; its hits are reported as %#x",
                    self.description, change.new, armed)

    def _on_cr3(self, vmi: Any, event: Any) -> Any:
        self.cr3_writes += 1
        return self._responses.NONE

    # -- teardown --------------------------------------------------------------------------

    def release_stale_monitor(self) -> None:
        """The tracer that monitored this domain died: take its monitor ring down and
        release the vCPUs that waited on it (this target must not have events of its own;
        see ``monitor.py``)."""
        if self._events or self._pauses:
            raise XenhptError("internal: our own monitor ring or pause is in the way")
        unpaused = release_stale_monitor(self.domid, self.vcpu_count)
        if unpaused:
            log.warning("xenhpt: %s: resumed the domain, paused %d time(s) by the tracer "
                        "that was killed", self.description, unpaused)

    def close(self) -> None:
        """Restore every byte, answer queued events, drop the monitor, resume, detach."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if self._gone:  # no domain to restore or resume; the state file names its domid,
            try:        # so the next attach (a new domid) drops it without a write
                self.vmi.destroy()
            except Exception:  # noqa: BLE001
                pass
            return
        problems: list[str] = []
        try:
            self.pause()
            problems = self.book.restore_all()
            if self._events:
                # vCPUs that hit a byte before it went back wait for an answer: give it.
                for _ in range(100):
                    if not self.vmi.are_events_pending():
                        break
                    self.vmi.listen(0)
                for event in self._events:
                    try:
                        self.vmi.clear_event(event)
                    except Exception as exc:  # noqa: BLE001 - keep tearing down
                        if type(event).__name__ == "DescriptorEvent":
                            # LibVMI 3.7 cannot clear it; closing the monitor ring
                            # (destroy, below) resets Xen's monitor flags: the lab
                            # re-registers it on the next run.
                            log.debug("xen: clearing the descriptor event: %s", exc)
                            continue
                        problems.append(f"clearing the {type(event).__name__}: {exc}")
                self.vmi.listen(0)
        finally:
            self._queue.clear()
            self._aliases.clear()
            self._after_swapgs.clear()
            while self._pauses > 0:
                self._pauses -= 1
                try:
                    self.vmi.resume_vm()
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"resuming the domain: {exc}")
            try:
                self.vmi.destroy()
            except Exception as exc:  # noqa: BLE001
                problems.append(f"detaching: {exc}")
        for problem in problems:
            log.warning("xenhpt: %s: teardown: %s (state kept in %s)", self.description,
                        problem, self.book.state_file)
