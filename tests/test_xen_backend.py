"""The Xen backend's own logic on a fake LibVMI: traps, emulation applied to the vCPU,
MSR events, teardown bookkeeping, repair after a killed tracer. No Xen needed."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from xenhpt.errors import MemoryReadError, TargetGone, TargetUnreachable, XenhptError
from xenhpt.vmi.target import Target
from xenhpt.vmi.x86.emulate import UnsupportedInstruction
from xenhpt.vmi.xen import target as xen_module
from xenhpt.vmi.xen.breakpoints import BreakpointBook, repair_leftovers
from xenhpt.vmi.xen.msr import MSR_CSTAR, MSR_EFER, MSR_LSTAR, MsrWatch
from xenhpt.vmi.xen.target import REGISTER_IDS, XenTarget, exception_trap_unavailable

from .conftest import XENHPT

ENTRY = 0xFFFF_FFFF_8100_0080   # entry_SYSCALL_64: swapgs
EXIT = 0xFFFF_FFFF_8100_0180    # syscall_exit_to_user_mode: push %rbx
MOVED = 0xFFFF_FFFF_8100_0300   # where a rootkit points LSTAR: endbr64
STACK = 0xFFFF_C900_0000_0F00
PML4 = 0x1000
KERNEL_GS = 0xFFFF_8880_3FC0_0000


class Responses:
    NONE = "none"
    SET_REGISTERS = "set-registers"
    EMULATE = "emulate"


class FakeVmi:
    """What XenTarget uses of ``libvmi.Libvmi``, over a bytearray and a register dict."""

    def __init__(self, memory: bytearray, registers: dict[int, dict[str, int]]) -> None:
        self.memory = memory
        self.regs = registers
        self.paused = 0
        self.events: list = []
        self.destroyed = False
        self.set_calls: list[tuple[str, int]] = []

    def read_pa(self, address, size):
        return bytes(self.memory[address:address + size]), min(size, len(self.memory) - address)

    def write_pa(self, address, data):
        self.memory[address:address + len(data)] = data
        return len(data)

    def get_vcpureg(self, number, vcpu):
        name = {v: k for k, v in REGISTER_IDS.items()}.get(number)
        return self.regs[vcpu].get(name, 0) if name else 0

    def set_vcpureg(self, value, number, vcpu):
        name = {v: k for k, v in REGISTER_IDS.items()}[number]
        self.regs[vcpu][name] = value
        self.set_calls.append((name, value))

    def get_num_vcpus(self):
        return len(self.regs)

    def get_max_physical_address(self):
        return len(self.memory)

    def pause_vm(self):
        self.paused += 1

    def resume_vm(self):
        assert self.paused > 0, "resumed more often than paused"
        self.paused -= 1

    def register_event(self, event):
        self.events.append(event)

    def clear_event(self, event):
        self.events.remove(event)

    def listen(self, timeout):
        pass

    def are_events_pending(self):
        return False

    def destroy(self):
        self.destroyed = True


def map_page(memory: bytearray, va: int, pa: int, tables: list[int]) -> None:
    table = PML4
    for shift in (39, 30, 21):
        index = (va >> shift) & 0x1FF
        entry = struct.unpack_from("<Q", memory, table + index * 8)[0]
        if not entry & 1:
            entry = tables.pop(0) | 3
            struct.pack_into("<Q", memory, table + index * 8, entry)
        table = entry & ~0xFFF
    struct.pack_into("<Q", memory, table + ((va >> 12) & 0x1FF) * 8, pa | 3)


@pytest.fixture
def guest(tmp_path: Path):
    yield from _guest(tmp_path, "int3")


@pytest.fixture
def sldt_guest(tmp_path: Path):
    yield from _guest(tmp_path, "sldt")


def _guest(tmp_path: Path, trap: str):
    memory = bytearray(0x40000)
    tables = [0x2000 * i for i in range(1, 12)]  # page-table pages at 0x2000, 0x4000, ...
    map_page(memory, ENTRY & ~0xFFF, 0x30000, tables)
    map_page(memory, STACK & ~0xFFF, 0x31000, tables)
    map_page(memory, (KERNEL_GS + 0x6014) & ~0xFFF, 0x32000, tables)  # per-CPU TSS slot
    code = {ENTRY: "0f01f8654889242514600000", EXIT: "534889fbe877", MOVED: "f30f1efa0f01f8"}
    for va, hexbytes in code.items():
        memory[0x30000 + (va & 0xFFF):0x30000 + (va & 0xFFF) + len(hexbytes) // 2] = \
            bytes.fromhex(hexbytes)
    regs = {name: 0 for name in REGISTER_IDS}
    regs.update(cr3=PML4, cr4=0x3606F0, rsp=STACK, rbx=0x1234, k_gs_base=KERNEL_GS)
    fake = FakeVmi(memory, {0: dict(regs), 1: dict(regs)})
    connected: list[bool] = []

    def connect(events: bool) -> FakeVmi:
        connected.append(events)
        return fake

    target = XenTarget(connect, "lab", 7, responses=Responses, state_dir=tmp_path, trap=trap)
    target._ensure_events = lambda: None  # the real one registers libvmi.event objects
    target._events = ["int3"]
    yield SimpleNamespace(target=target, fake=fake, memory=memory, connected=connected,
                          state=tmp_path / "lab.json")
    target.close()


def int3_event(vcpu: int, rip: int, **regs: int) -> SimpleNamespace:
    fields = dict(rax=0, rbx=0x1234, rcx=0, rdx=0, rsi=0, rdi=0, rbp=0, rsp=STACK, r8=0,
                  r9=0, r10=0, r11=0, r12=0, r13=0, r14=0, r15=0, rflags=0x246, rip=rip,
                  cr0=0x80050033, cr2=0, cr3=PML4, cr4=0x3606F0, fs_base=0, gs_base=0,
                  msr_efer=0xD01)
    fields.update(regs)
    return SimpleNamespace(vcpu_id=vcpu, x86_regs=SimpleNamespace(**fields), reinject=-1)


def test_attach_does_not_open_the_monitor_ring_and_leaves_the_domain_running(guest):
    assert guest.connected == [False]
    assert guest.fake.paused == 0


def test_a_breakpoint_writes_int3_and_records_the_original_byte_first(guest):
    guest.target.insert_breakpoint(EXIT)
    assert guest.memory[0x30180] == 0xCC
    assert json.loads(guest.state.read_text())["bytes"] == {"0x30180": 0x53}
    assert guest.fake.paused == 0


def test_swapgs_trap_reports_the_breakpoint_state_and_moves_the_vcpu_past_it(guest):
    """The guest runs its own swapgs (no set_vcpureg); the INT3 sits on the next one."""
    target = guest.target
    target.insert_breakpoint(ENTRY)
    assert guest.memory[0x30080:0x30084] == bytes.fromhex("0f01f8cc")
    event = int3_event(1, ENTRY + 3, rax=39, rsp=0x7FFF_0000_1000, gs_base=KERNEL_GS)
    guest.fake.regs[1]["k_gs_base"] = 0x7000  # after the guest's swapgs: user gs is shadow
    assert target._on_int3(guest.fake, event) == Responses.SET_REGISTERS
    assert event.reinject == 0
    assert event.x86_regs.rip == ENTRY + 12  # past mov %rsp,%gs:0x6014, executed for it
    assert guest.fake.set_calls == []
    trap = target.wait_for_trap(timeout=0)
    assert (trap.vcpu, trap.pc, trap.reason) == (1, ENTRY, "breakpoint")
    registers = target.registers(1)  # as at the breakpoint, like the gdbstub backend
    assert (registers["rip"], registers["rax"], registers["k_gs_base"],
            registers["gs_base"]) == (ENTRY, 39, KERNEL_GS, 0x7000)
    assert guest.fake.paused == 1  # the tracer reads a stopped guest
    assert target.wait_for_trap(timeout=0) is None
    assert guest.fake.paused == 0


def test_push_rbx_trap_stores_rbx_on_the_guest_kernel_stack(guest):
    guest.target.insert_breakpoint(EXIT)
    event = int3_event(0, EXIT, rbx=0xAABB_CCDD)
    guest.target._on_int3(guest.fake, event)
    assert event.x86_regs.rsp == STACK - 8 and event.x86_regs.rip == EXIT + 1
    stored = guest.memory[0x31000 + ((STACK - 8) & 0xFFF):][:8]
    assert struct.unpack("<Q", stored)[0] == 0xAABB_CCDD


def test_an_int3_that_is_not_ours_goes_back_to_the_guest(guest):
    event = int3_event(0, ENTRY + 0x40)
    assert guest.target._on_int3(guest.fake, event) == Responses.NONE
    assert event.reinject == 1
    assert guest.target.wait_for_trap(timeout=0) is None


def test_a_hit_queued_before_removal_reexecutes_the_restored_instruction(guest):
    guest.target.insert_breakpoint(EXIT)
    guest.target.remove_breakpoint(EXIT)
    assert guest.memory[0x30180] == 0x53
    event = int3_event(0, EXIT)
    assert guest.target._on_int3(guest.fake, event) == Responses.NONE
    assert event.reinject == 0 and event.x86_regs.rip == EXIT


def test_close_restores_every_byte_removes_the_state_file_and_resumes(guest):
    guest.target.insert_breakpoint(ENTRY)
    guest.target.insert_breakpoint(EXIT)
    guest.target._on_int3(guest.fake, int3_event(0, ENTRY + 3))  # pauses, trap queued
    guest.target.close()
    assert guest.memory[0x30080] == 0x0F and guest.memory[0x30180] == 0x53
    assert not guest.state.exists()
    assert guest.fake.paused == 0 and guest.fake.destroyed


def test_an_instruction_that_cannot_be_executed_is_refused_before_writing(guest):
    guest.memory[0x30200:0x30204] = bytes.fromhex("4883ec20")  # sub $0x20,%rsp
    with pytest.raises(UnsupportedInstruction, match="cannot trap 0xffffffff81000200"):
        guest.target.insert_breakpoint(0xFFFF_FFFF_8100_0200)
    assert guest.memory[0x30200] == 0x48
    assert guest.fake.paused == 0


def test_a_guest_moving_lstar_is_followed_and_reported(guest, caplog):
    target = guest.target
    target.insert_breakpoint(ENTRY)
    target.msr.seed(0, MSR_LSTAR, ENTRY)
    moved = SimpleNamespace(vcpu_id=0, msr=MSR_LSTAR, value=MOVED, previous=ENTRY)
    assert target._on_msr(guest.fake, moved) == Responses.NONE
    assert "moved the syscall (64-bit) entry point" in caplog.text
    assert guest.memory[0x30300] == 0xCC
    target._on_int3(guest.fake, int3_event(0, MOVED))
    trap = target.wait_for_trap(timeout=0)
    assert trap.pc == ENTRY  # reported where the tracer armed it: its plan still applies
    assert target.msr_changes[0].new == MOVED


def test_leftover_bytes_of_a_killed_tracer_are_repaired_on_attach(tmp_path):
    memory = bytearray(0x40000)
    memory[0x30080] = 0xCC
    memory[0x30180] = 0xCC
    state = tmp_path / "lab.json"
    state.write_text(json.dumps({"format": 1, "domain": "lab", "domid": 7,
                                 "bytes": {"0x30080": 0x0F, "0x30180": 0x53}}))
    fake = FakeVmi(memory, {0: {"cr4": 0x3606F0, "cr3": PML4}})
    target = XenTarget(lambda events: fake, "lab", 7, responses=Responses, state_dir=tmp_path)
    assert (memory[0x30080], memory[0x30180]) == (0x0F, 0x53)
    assert not state.exists() and fake.paused == 0
    target.close()


class Memory:
    def __init__(self) -> None:
        self.data = bytearray(0x100)

    def read_physical(self, address: int, size: int) -> bytes:
        return bytes(self.data[address:address + size])

    def write_physical(self, address: int, data: bytes) -> None:
        self.data[address:address + len(data)] = data


def test_repair_skips_a_restarted_domain_and_bytes_no_longer_int3(tmp_path):
    memory = Memory()
    memory.data[0x10] = 0xCC
    memory.data[0x20] = 0x55  # the guest (or someone) already changed it back
    state = tmp_path / "d.json"
    state.write_text(json.dumps({"domid": 3, "bytes": {"0x10": 0x0F, "0x20": 0x53}}))
    assert repair_leftovers(memory, 4, state) == 0  # other domid: fresh memory, leave it
    assert memory.data[0x10] == 0xCC and not state.exists()
    state.write_text(json.dumps({"domid": 3, "bytes": {"0x10": 0x0F, "0x20": 0x53}}))
    assert repair_leftovers(memory, 3, state) == 1
    assert (memory.data[0x10], memory.data[0x20]) == (0x0F, 0x55)


def test_book_refuses_an_address_that_already_holds_int3(tmp_path):
    book = BreakpointBook(Memory(), "d", 1, tmp_path / "d.json")
    with pytest.raises(XenhptError, match="already holds an INT3"):
        book.insert(0xFFFF_FFFF_8100_0000, 0x10, b"\xcc\x90")


def test_msr_all_events_are_filtered_to_entry_points_and_efer_sce():
    watch = MsrWatch()
    watch.seed(0, MSR_LSTAR, ENTRY)
    watch.seed(0, MSR_EFER, 0xD01)
    assert watch.on_write(0, 0xC000_0102, 0x1234, 0) is None  # KERNEL_GS_BASE: dropped
    assert watch.on_write(0, MSR_LSTAR, ENTRY, ENTRY) is None  # rewritten, unchanged
    change = watch.on_write(0, MSR_LSTAR, MOVED, ENTRY)
    assert change.entry_moved and (change.old, change.new) == (ENTRY, MOVED)
    assert watch.on_write(0, MSR_EFER, 0xD01 | 0x800, 0xD01) is None  # SCE unchanged
    efer = watch.on_write(0, MSR_EFER, 0xD00, 0xD01)
    assert not efer.entry_moved and "64-bit syscall disabled" in efer.describe()
    assert watch.on_write(1, MSR_CSTAR, 0x1000, None) is None  # first sight: remembered


def test_the_papers_exception_traps_are_refused_with_the_reason():
    error = exception_trap_unavailable("efer-sce")
    assert "#UD" in str(error) and "stock Xen" in str(error) and "INT3" in str(error)
    with pytest.raises(XenhptError, match="SYSENTER_CS=0"):
        raise exception_trap_unavailable("sysenter-cs")


def test_ps_on_a_xen_target_without_xen_is_one_clear_line():
    if Path("/dev/xen/privcmd").exists():
        pytest.skip("this machine is a Xen Dom0")
    done = subprocess.run([XENHPT, "ps", "xen:nosuch"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Xen Dom0" in lines[0], done.stderr


# -- XENHPT_XEN_TRAP=sldt: the 3-byte descriptor-table read Xen reports as an event ----------

def test_sldt_trap_displaces_push_rbx_and_the_next_mov_and_executes_both(sldt_guest):
    guest = sldt_guest
    guest.target.insert_breakpoint(EXIT)
    assert guest.memory[0x30180:0x30184] == bytes.fromhex("0f00c0fb")
    state = json.loads(guest.state.read_text())
    assert state["bytes"] == {"0x30180": 0x53, "0x30181": 0x48, "0x30182": 0x89}
    assert state["patched"] == {"0x30180": 0x0F, "0x30181": 0x00, "0x30182": 0xC0}
    event = int3_event(0, EXIT, rbx=0xAABB_CCDD, rdi=0xFFFF_C900_0000_0F58)
    assert guest.target._on_descriptor(guest.fake, event) == Responses.SET_REGISTERS
    regs = event.x86_regs
    assert (regs.rip, regs.rsp, regs.rbx) == (EXIT + 4, STACK - 8, 0xFFFF_C900_0000_0F58)
    stored = guest.memory[0x31000 + ((STACK - 8) & 0xFFF):][:8]
    assert struct.unpack("<Q", stored)[0] == 0xAABB_CCDD
    trap = guest.target.wait_for_trap(timeout=0)
    seen = guest.target.registers(0)  # the state at the trap address, before the push
    assert (trap.pc, seen["rip"], seen["rsp"], seen["rbx"]) == (EXIT, EXIT, STACK, 0xAABB_CCDD)


def test_sldt_trap_at_a_swapgs_goes_after_it_and_reports_the_gs_bases_before_it(sldt_guest):
    guest = sldt_guest
    target = guest.target
    target.insert_breakpoint(ENTRY)
    assert guest.memory[0x30080:0x30086] == bytes.fromhex("0f01f80f00c0")  # swapgs kept
    assert target.breakpoints == frozenset({ENTRY})
    guest.fake.regs[0]["k_gs_base"] = 0x7000  # the guest's swapgs ran: user gs is shadow
    event = int3_event(0, ENTRY + 3, rax=39, rsp=0x7FFF_0000_1000, gs_base=KERNEL_GS)
    assert target._on_descriptor(guest.fake, event) == Responses.SET_REGISTERS
    assert event.x86_regs.rip == ENTRY + 12 and guest.fake.set_calls == []
    assert struct.unpack("<Q", guest.memory[0x32014:0x3201C])[0] == 0x7FFF_0000_1000
    trap = target.wait_for_trap(timeout=0)
    seen = target.registers(0)
    assert (trap.pc, seen["rip"], seen["rax"]) == (ENTRY, ENTRY, 39)
    assert (seen["gs_base"], seen["k_gs_base"]) == (0x7000, KERNEL_GS)
    target.remove_breakpoint(ENTRY)
    assert guest.memory[0x30080:0x30086] == bytes.fromhex("0f01f8654889")
    assert target.breakpoints == frozenset()


def test_the_guests_own_descriptor_instructions_are_emulated_by_xen(sldt_guest):
    event = int3_event(0, ENTRY + 0x40)
    assert sldt_guest.target._on_descriptor(sldt_guest.fake, event) == Responses.EMULATE
    assert sldt_guest.target.wait_for_trap(timeout=0) is None


def test_repair_puts_back_the_bytes_of_a_multi_byte_trap(tmp_path):
    memory = Memory()
    memory.data[0x10:0x13] = bytes.fromhex("0f00c0")
    state = tmp_path / "d.json"
    state.write_text(json.dumps({"domid": 3, "bytes": {"0x10": 0x53, "0x11": 0x48, "0x12": 0x89},
                                 "patched": {"0x10": 0x0F, "0x11": 0x00, "0x12": 0xC0}}))
    assert repair_leftovers(memory, 3, state) == 3
    assert memory.data[0x10:0x13] == bytes.fromhex("534889")


def test_an_unknown_trap_kind_is_refused(tmp_path):
    with pytest.raises(XenhptError, match="XENHPT_XEN_TRAP"):
        XenTarget(lambda events: None, "lab", 7, trap="ud2", state_dir=tmp_path)


def _monitor_refused_once(fake: FakeVmi, refusals: list[bool]):
    def connect(events: bool) -> FakeVmi:
        if events and refusals:
            refusals.pop()
            raise TargetUnreachable("xen:lab: LibVMI cannot attach (another monitor attached?)")
        return fake
    return connect


def test_a_refused_monitor_is_one_error_and_the_target_still_closes(tmp_path):
    pytest.importorskip("libvmi.event", reason="the libvmi bindings are a dependency")
    fake = FakeVmi(bytearray(0x40000), {0: {"cr4": 0x3606F0, "cr3": PML4}})
    target = XenTarget(_monitor_refused_once(fake, [True]), "lab", 7, responses=Responses,
                       state_dir=tmp_path)
    with pytest.raises(TargetUnreachable, match="another monitor"):
        target._ensure_events()
    target.close()  # was: TypeError on the destroyed handle
    assert fake.paused == 0


def test_a_killed_tracers_monitor_ring_is_taken_down_after_its_bytes(tmp_path, monkeypatch):
    pytest.importorskip("libvmi.event", reason="the libvmi bindings are a dependency")
    memory = bytearray(0x40000)
    memory[0x30080] = 0xCC
    (tmp_path / "lab.json").write_text(json.dumps({"format": 1, "domain": "lab", "domid": 7,
                                                   "bytes": {"0x30080": 0x0F}}))
    released: list[int] = []
    monkeypatch.setattr(xen_module, "release_stale_monitor",
                        lambda domid, vcpus: released.append(domid))
    fake = FakeVmi(memory, {0: {"cr4": 0x3606F0, "cr3": PML4, "k_gs_base": 0}})
    target = XenTarget(_monitor_refused_once(fake, [True]), "lab", 7, responses=Responses,
                       state_dir=tmp_path)
    assert memory[0x30080] == 0x0F  # the bytes first, then the ring
    target._ensure_events()
    assert released == [7] and len(fake.events) >= 2
    target.close()


def test_a_trap_under_a_cr3_that_does_not_map_the_kernel_uses_the_rule_handed_over(guest):
    """Xen places INT3 by physical address; the OS layer says where kernel text is when
    vCPU 0 runs on page tables that do not map it (Linux: KPTI's user PGD)."""
    user_pgd = 0x3F000  # an empty table: maps nothing, like a user PGD for kernel text
    guest.fake.regs[0]["cr3"] = user_pgd
    with pytest.raises(MemoryReadError):
        guest.target.insert_breakpoint(EXIT)  # not told yet: the CR3 as it is
    assert isinstance(guest.target, Target)  # the protocol declares set_kernel_paging
    handed: list[int] = []
    guest.target.set_kernel_paging(4, lambda cr3: handed.append(cr3) or PML4)
    guest.target.insert_breakpoint(EXIT)
    assert guest.memory[0x30180] == 0xCC
    assert user_pgd in handed


def test_a_domain_that_goes_away_ends_the_wait_and_close_writes_nothing(guest):
    """A domU rebooted or destroyed mid-trace: LibVMI's listen only times out, so the
    target asks xenstore; then it is gone, and close() has no domain to write to."""
    target, fake = guest.target, guest.fake
    target.insert_breakpoint(EXIT)
    alive = [True]
    target._alive = lambda: alive[0]
    assert target.wait_for_trap(timeout=0.01) is None
    alive[0] = False
    target._next_alive_check = 0.0
    with pytest.raises(TargetGone, match="is gone"):
        target.wait_for_trap(timeout=0.5)
    writes: list[int] = []
    fake.write_pa = lambda address, data: writes.append(address) or len(data)
    paused = fake.paused
    target.close()
    assert writes == [] and fake.paused == paused and fake.destroyed
    assert guest.state.exists()  # names domid 7: the next attach (a new domid) drops it


def test_a_toolstack_that_does_not_answer_is_one_clear_error(monkeypatch):
    """Seen in the Xen lab: `xl domid lab` took over 30 s in the nested dom0, and the
    TimeoutExpired came out of `xenhpt trace` as a traceback."""
    import subprocess

    from xenhpt.vmi.xen import domain

    def hung(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs.get("timeout"))

    monkeypatch.setattr(domain.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(domain.subprocess, "run", hung)
    with pytest.raises(TargetUnreachable, match=r"`xenstore-list /local/domain` did not answer"):
        domain.resolve_domain("lab")


def test_a_domain_whose_xenstore_entry_is_gone_does_not_exist(monkeypatch):
    """xenstore-read's own words for a removed path (Xen 4.17): seen after a domU reboot,
    when the tracer kept waiting on the dead domid."""
    import subprocess

    from xenhpt.vmi.xen import domain

    def read(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "xenstore-read: couldn't read path "
                                           "/local/domain/1/name\n")

    monkeypatch.setattr(domain.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(domain.subprocess, "run", read)
    assert domain.domain_exists("lab", 1) is False


def test_without_xenstore_tools_xl_tells_whether_the_domain_exists(monkeypatch):
    """A dom0 without xenstore-utils (the Xen lab's, until run 9 showed the tracer waiting
    forever on a rebooted domU): ``xl domname`` answers instead."""
    import subprocess

    from xenhpt.vmi.xen import domain

    answers = {}

    def run(command, **kwargs):
        assert command[:2] == ["xl", "domname"], command
        return answers[command[2]]

    monkeypatch.setattr(domain.shutil, "which",
                        lambda name: None if name.startswith("xenstore") else f"/usr/sbin/{name}")
    monkeypatch.setattr(domain.subprocess, "run", run)
    answers["1"] = subprocess.CompletedProcess(
        ["xl"], 1, "", "Can't get domain name of domain id '1', maybe this domain does not "
        "exist.\n")
    answers["2"] = subprocess.CompletedProcess(["xl"], 0, "lab\n", "")
    answers["3"] = subprocess.CompletedProcess(["xl"], 0, "web01\n", "")
    answers["4"] = subprocess.CompletedProcess(["xl"], 1, "", "libxl: cannot lock\n")
    assert domain.domain_exists("lab", 1) is False
    assert domain.domain_exists("lab", 2) is True
    assert domain.domain_exists("lab", 3) is False  # the domid now names another domain
    assert domain.domain_exists("lab", 4) is True  # xl failed for another reason: can't tell
