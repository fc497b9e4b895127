"""check-syscalls on a synthetic i386 kernel: 4-byte pointers, 8-byte IDT gates, the one
``sys_call_table`` of the i386 ABI (``__ia32_sys_*``, the native handlers, not a 64-bit
kernel's compat ones), ``entry_INT80_32`` behind int 0x80, the double fault's task gate
and 32-bit inline hooks.

Like ``test_syscall_dispatch.py``: ``synthetic_kernel.py`` memory whose virtual addresses
are physical; each test rewrites one place as a rootkit would.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from xenhpt.cli.integrity import known_calls
from xenhpt.linux.syscall_dispatch import (
    INLINE_HOOK,
    NOT_PRESENT,
    OK,
    OUTSIDE_TEXT,
    WRONG_FUNCTION,
    check_syscall_dispatch,
    dispatch_switch,
)
from xenhpt.output.syscall_dispatch import findings_text
from xenhpt.vmi.x86.branch import branch_target
from xenhpt.vmi.x86.idt import decode_gate
from xenhpt.vmi.x86.msr import MSR_LSTAR, MSR_SYSENTER_EIP

from .synthetic_kernel import SparseMemory, kernel, write_isf

TEXT, TEXT_END = 0xC100_0000, 0xC100_8000
FUNCTIONS = {"__ia32_sys_restart_syscall": TEXT + 0x100, "__ia32_sys_exit": TEXT + 0x200,
             "__ia32_sys_fork": TEXT + 0x300, "__ia32_sys_read": TEXT + 0x400,
             "__ia32_sys_ni_syscall": TEXT + 0x500, "__ia32_sys_old_mmap": TEXT + 0x600,
             "entry_INT80_32": TEXT + 0x1000, "entry_SYSENTER_32": TEXT + 0x1100,
             "do_int80_syscall_32": TEXT + 0x1200, "ia32_sys_call": TEXT + 0x1300,
             "asm_exc_divide_error": TEXT + 0x1400}
EARLY = TEXT + 0x2000  # early_idt_handler_array: 9 bytes a vector on i386
TABLE = 0xC200_0000
IDT = 0xC300_0000
MODULE = 0xF800_1000  # where a loaded module (a rootkit) would put its code
MMAP = 90  # i386's mmap: sys_old_mmap natively, compat_sys_ia32_mmap in a 64-bit kernel
KERNEL_CS, DOUBLEFAULT_TSS = 0x60, 31 << 3


def gate(handler: int, present: bool = True) -> bytes:
    """An 8-byte protected-mode interrupt gate."""
    return struct.pack("<HHBBH", handler & 0xFFFF, KERNEL_CS, 0, 0x8E if present else 0x0E,
                       handler >> 16)


def task_gate(selector: int) -> bytes:
    return struct.pack("<HHBBH", 0, selector, 0, 0x85, 0)


@pytest.fixture
def guest(tmp_path: Path) -> dict:
    memory = SparseMemory()
    memory.paging_levels = 3
    table = ["__ia32_sys_restart_syscall", "__ia32_sys_exit", "__ia32_sys_fork",
             "__ia32_sys_read"] + ["__ia32_sys_ni_syscall"] * (MMAP - 4) \
        + ["__ia32_sys_old_mmap"]
    memory.write(TABLE, struct.pack(f"<{len(table)}I", *[FUNCTIONS[n] for n in table]))
    for address in FUNCTIONS.values():
        memory.write(address, b"\x55\x89\xe5\x57\x56\x53" + b"\x90" * 10)  # push %ebp…
    memory.write(IDT, gate(FUNCTIONS["asm_exc_divide_error"]))
    memory.write(IDT + 1 * 8, gate(EARLY + 1 * 9))  # a vector Linux left to boot's handler
    memory.write(IDT + 8 * 8, task_gate(DOUBLEFAULT_TSS))
    memory.write(IDT + 0x80 * 8, gate(FUNCTIONS["entry_INT80_32"]))
    for vector in range(256):
        if vector not in (0, 1, 8, 0x80):
            memory.write(IDT + vector * 8, gate(0, present=False))
    symbols: dict[str, int | dict] = {
        **FUNCTIONS, "_stext": TEXT, "_etext": TEXT_END, "idt_table": IDT,
        "early_idt_handler_array": EARLY,
        "sys_call_table": {"address": TABLE, "type": {"kind": "array", "count": len(table),
                                                      "subtype": {"kind": "pointer"}}}}
    isf = write_isf(tmp_path / "kernel.json", {"dummy": (4, {})}, symbols, pointer_size=4)
    return {"memory": memory, "isf": isf, "tmp": tmp_path, "symbols": symbols}


def findings(guest: dict) -> list:
    return check_syscall_dispatch(kernel(guest["memory"], guest["isf"]), known_calls())


def suspicious(guest: dict) -> list:
    return [f for f in findings(guest) if f.suspicious]


def test_untouched_i386_kernel_is_clean_with_4_byte_entries_and_8_byte_gates(
        guest: dict) -> None:
    found = findings(guest)
    table = [f for f in found if f.check == "sys_call_table"]
    assert [f.verdict for f in table] == [OK] * (MMAP + 1)
    # the i386 ABI's numbers, not x86-64's (0 would be read there)
    assert [(f.name, f.points_at) for f in table[:4]] == [
        ("restart_syscall", "__ia32_sys_restart_syscall"), ("exit", "__ia32_sys_exit"),
        ("fork", "__ia32_sys_fork"), ("read", "__ia32_sys_read")]
    assert all(f.address < 1 << 32 for f in found)
    assert not [f for f in found if f.check == "ia32_sys_call_table"]
    assert {f.name for f in found if f.check == "entry code"} == \
        {"entry_INT80_32", "entry_SYSENTER_32", "do_int80_syscall_32", "ia32_sys_call"}
    assert [(f.index, f.points_at) for f in found if f.check == "idt"] == [
        (0, "asm_exc_divide_error"), (1, "early_idt_handler_array+0x9"),
        (8, "task gate, TSS selector 0xf8"), (0x80, "entry_INT80_32")]
    assert not any(f.suspicious for f in found)
    assert findings_text(found).endswith("clean: nothing leads outside the kernel text or "
                                         "to the wrong function\n")


def test_i386_table_expects_the_native_handler_not_the_compat_one(guest: dict) -> None:
    """mmap is sys_old_mmap in an i386 kernel (compat_sys_ia32_mmap is a 64-bit kernel's)."""
    [mmap] = [f for f in findings(guest) if f.check == "sys_call_table" and f.index == MMAP]
    assert (mmap.name, mmap.expected, mmap.points_at, mmap.verdict) == (
        "mmap", "__ia32_sys_old_mmap", "__ia32_sys_old_mmap", OK)


def test_i386_table_entry_rewritten_or_pointing_into_a_module_is_named(guest: dict) -> None:
    guest["memory"].u32(TABLE + 3 * 4, FUNCTIONS["__ia32_sys_exit"])  # read → exit
    [finding] = suspicious(guest)
    assert (finding.check, finding.index, finding.name, finding.address, finding.points_at,
            finding.expected, finding.verdict) == (
        "sys_call_table", 3, "read", FUNCTIONS["__ia32_sys_exit"], "__ia32_sys_exit",
        "__ia32_sys_read", WRONG_FUNCTION)
    guest["memory"].u32(TABLE + 4, MODULE)
    assert [(f.index, f.address, f.verdict) for f in suspicious(guest)] == [
        (1, MODULE, OUTSIDE_TEXT), (3, FUNCTIONS["__ia32_sys_exit"], WRONG_FUNCTION)]


def test_i386_int80_gate_moved_removed_or_into_a_module_is_reported(guest: dict) -> None:
    memory = guest["memory"]
    memory.write(IDT + 0x80 * 8, gate(FUNCTIONS["__ia32_sys_read"]))
    [finding] = suspicious(guest)
    assert (finding.check, finding.index, finding.points_at, finding.expected,
            finding.verdict) == ("idt", 0x80, "__ia32_sys_read", "entry_INT80_32",
                                 WRONG_FUNCTION)
    memory.write(IDT + 0x80 * 8, gate(MODULE))
    [finding] = suspicious(guest)
    assert (finding.address, finding.verdict) == (MODULE, OUTSIDE_TEXT)
    memory.write(IDT + 0x80 * 8, gate(FUNCTIONS["entry_INT80_32"], present=False))
    assert [(f.index, f.verdict) for f in suspicious(guest)] == [(0x80, NOT_PRESENT)]


def test_i386_gate_into_a_module_and_a_stray_task_gate_are_reported(guest: dict) -> None:
    guest["memory"].write(IDT + 0x21 * 8, gate(MODULE))
    guest["memory"].write(IDT + 0x22 * 8, task_gate(DOUBLEFAULT_TSS))
    assert [(f.index, f.verdict) for f in suspicious(guest)] == [
        (0x21, OUTSIDE_TEXT), (0x22, WRONG_FUNCTION)]


@pytest.mark.parametrize("hook", ["jmp rel32", "push imm32; ret", "mov eax, imm32; jmp eax"])
def test_jump_out_of_the_i386_entry_code_is_an_inline_hook(guest: dict, hook: str) -> None:
    at = FUNCTIONS["entry_INT80_32"]
    code = {"jmp rel32": b"\xe9" + struct.pack("<i", MODULE - (at + 5)),
            "push imm32; ret": b"\x68" + struct.pack("<I", MODULE) + b"\xc3",
            "mov eax, imm32; jmp eax": b"\xb8" + struct.pack("<I", MODULE) + b"\xff\xe0"}[hook]
    guest["memory"].write(at, code)
    [finding] = suspicious(guest)
    assert (finding.check, finding.name, finding.address, finding.verdict) == \
        ("entry code", "entry_INT80_32", MODULE, INLINE_HOOK)


def test_branch_target_decodes_32bit_code_in_32bit_words() -> None:
    at = 0xC100_0000
    assert branch_target(b"\xe9" + struct.pack("<i", 0x100) + bytes(10), at, 4) == at + 0x105
    # rel32 wraps at 4 GiB, and push's imm32 is an address, not sign-extended to 64 bits
    assert branch_target(b"\xe9" + struct.pack("<i", 0x7FFF_0000) + bytes(10),
                         0xF000_0000, 4) == 0x6FFF_0005
    assert branch_target(b"\x68" + struct.pack("<I", MODULE) + b"\xc3" + bytes(10), at, 4) \
        == MODULE
    assert branch_target(b"\xb9" + struct.pack("<I", MODULE) + b"\xff\xd1" + bytes(9), at, 4) \
        == MODULE  # mov ecx, imm32; call ecx
    assert branch_target(b"\xb8" + struct.pack("<I", MODULE) + b"\xff\xe1" + bytes(9), at, 4) \
        is None  # jmp ecx after mov eax: not the hook form
    assert branch_target(b"\xf3\x0f\x1e\xfb\xeb\x10" + bytes(10), at, 4) == at + 4 + 2 + 0x10
    # 48 b8 is `dec eax; mov eax, imm32` in 32-bit code, not movabs
    assert branch_target(b"\x48\xb8" + struct.pack("<Q", MODULE) + b"\xff\xe0" + bytes(4),
                         at, 4) is None
    assert branch_target(b"\x55\x89\xe5" + bytes(13), at, 4) is None


def test_protected_mode_gate_has_its_offset_in_bytes_0_1_and_6_7() -> None:
    raw = bytes.fromhex("3412 6000 00 8e 78 56")
    decoded = decode_gate(raw, 4)
    assert (decoded.handler, decoded.selector, decoded.present, decoded.is_task_gate) == \
        (0x5678_1234, 0x60, True, False)
    assert decode_gate(bytes.fromhex("0000 f800 00 85 0000"), 4).is_task_gate
    assert not decode_gate(bytes.fromhex("3412 6000 00 0e 78 56"), 4).present


def test_i386_entry_msr_is_sysenter_only(guest: dict) -> None:
    memory = guest["memory"]
    memory.msrs = {MSR_SYSENTER_EIP: FUNCTIONS["entry_SYSENTER_32"], MSR_LSTAR: 0}
    checked = [f for f in findings(guest) if f.check == "msr"]
    assert [(f.name, f.verdict) for f in checked] == [("sysenter_eip", OK)]
    memory.msrs[MSR_SYSENTER_EIP] = MODULE
    [hooked] = suspicious(guest)
    assert (hooked.name, hooked.address, hooked.verdict) == ("sysenter_eip", MODULE,
                                                             OUTSIDE_TEXT)


def test_i386_kernel_dispatches_through_ia32_sys_call(guest: dict) -> None:
    assert dispatch_switch(kernel(guest["memory"], guest["isf"])) == "ia32_sys_call"
