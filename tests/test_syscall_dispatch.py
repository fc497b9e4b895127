"""check-syscalls on a synthetic kernel: a clean one, then one hook of each kind.

The kernel's text is [TEXT, TEXT_END); a few syscall functions, entry code and an IDT
live there (``synthetic_kernel.py`` memory: virtual addresses are physical). Each test
rewrites one place as a rootkit would and checks the finding names it.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from xenhpt.cli.integrity import known_calls
from xenhpt.linux.syscall_dispatch import (
    INLINE_HOOK,
    OK,
    OUTSIDE_TEXT,
    WRONG_FUNCTION,
    branch_target,
    check_syscall_dispatch,
)
from xenhpt.output.syscall_dispatch import findings_text

from .synthetic_kernel import SparseMemory, kernel, write_isf

TEXT, TEXT_END = 0xFFFF_FFFF_8100_0000, 0xFFFF_FFFF_8100_8000
FUNCTIONS = {"__x64_sys_read": TEXT + 0x100, "__x64_sys_write": TEXT + 0x200,
             "__x64_sys_open": TEXT + 0x300, "__x64_sys_ni_syscall": TEXT + 0x400,
             "entry_SYSCALL_64": TEXT + 0x1000, "x64_sys_call": TEXT + 0x1100,
             "asm_int80_emulation": TEXT + 0x1200, "asm_exc_divide_error": TEXT + 0x1300}
TABLE = 0xFFFF_FFFF_8200_0000
IDT = 0xFFFF_FFFF_8300_0000
MODULE = 0xFFFF_FFFF_C000_1000  # where a loaded module (a rootkit) would put its code


def gate(handler: int, present: bool = True) -> bytes:
    return struct.pack("<HHBBHII", handler & 0xFFFF, 0x10, 0, 0x8E if present else 0x0E,
                       handler >> 16 & 0xFFFF, handler >> 32, 0)


@pytest.fixture
def guest(tmp_path: Path) -> dict:
    memory = SparseMemory()
    table = ["__x64_sys_read", "__x64_sys_write", "__x64_sys_open", "__x64_sys_ni_syscall"]
    memory.u64(TABLE, *[FUNCTIONS[name] for name in table])
    for address in FUNCTIONS.values():
        memory.write(address, b"\xf3\x0f\x1e\xfa\x55\x48\x89\xe5" + b"\x90" * 8)  # endbr64…
    memory.write(IDT, gate(FUNCTIONS["asm_exc_divide_error"]))
    memory.write(IDT + 0x80 * 16, gate(FUNCTIONS["asm_int80_emulation"]))
    for vector in range(1, 256):
        if vector != 0x80:
            memory.write(IDT + vector * 16, gate(0, present=False))
    symbols: dict[str, int | dict] = {
        **FUNCTIONS, "_stext": TEXT, "_etext": TEXT_END, "idt_table": IDT,
        "sys_call_table": {"address": TABLE, "type": {"kind": "array", "count": 4,
                                                      "subtype": {"kind": "pointer"}}}}
    isf = write_isf(tmp_path / "kernel.json", {"dummy": (8, {})}, symbols)
    return {"memory": memory, "isf": isf, "tmp": tmp_path, "symbols": symbols}


def suspicious(guest: dict) -> list:
    return [f for f in check_syscall_dispatch(kernel(guest["memory"], guest["isf"]), known_calls())
            if f.suspicious]


def test_untouched_kernel_is_clean(guest: dict) -> None:
    findings = check_syscall_dispatch(kernel(guest["memory"], guest["isf"]), known_calls())
    assert [f.verdict for f in findings if f.check == "sys_call_table"] == [OK] * 4
    assert [f.name for f in findings if f.check == "sys_call_table"] == \
        ["read", "write", "open", "close"]  # close: not built, so ni is right
    assert {f.name for f in findings if f.check == "entry code"} == \
        {"entry_SYSCALL_64", "x64_sys_call", "asm_int80_emulation"}
    assert [f.index for f in findings if f.check == "idt"] == [0, 0x80]
    assert not any(f.suspicious for f in findings)
    assert findings_text(findings).endswith("clean: nothing leads outside the kernel text or "
                                            "to the wrong function\n")


def test_table_entry_rewritten_to_another_kernel_function_is_named(guest: dict) -> None:
    guest["memory"].u64(TABLE, FUNCTIONS["__x64_sys_write"])  # read → write
    [finding] = suspicious(guest)
    assert (finding.check, finding.index, finding.name, finding.points_at, finding.expected,
            finding.verdict) == ("sys_call_table", 0, "read", "__x64_sys_write",
                                 "__x64_sys_read", WRONG_FUNCTION)
    assert "read" in findings_text([finding])


def test_table_entry_pointing_into_a_module_is_outside_the_text(guest: dict) -> None:
    guest["memory"].u64(TABLE + 8, MODULE)
    [finding] = suspicious(guest)
    assert (finding.name, finding.address, finding.verdict) == ("write", MODULE, OUTSIDE_TEXT)


def test_jump_out_of_the_entry_code_is_an_inline_hook(guest: dict) -> None:
    at = FUNCTIONS["entry_SYSCALL_64"]
    guest["memory"].write(at, b"\xe9" + struct.pack("<i", MODULE - (at + 5)))
    [finding] = suspicious(guest)
    assert (finding.name, finding.address, finding.verdict) == \
        ("entry_SYSCALL_64", MODULE, INLINE_HOOK)


def test_int80_gate_moved_to_another_function_or_a_module_is_reported(guest: dict) -> None:
    guest["memory"].write(IDT + 0x80 * 16, gate(FUNCTIONS["__x64_sys_read"]))
    [finding] = suspicious(guest)
    assert (finding.check, finding.index, finding.points_at, finding.verdict) == \
        ("idt", 0x80, "__x64_sys_read", WRONG_FUNCTION)
    guest["memory"].write(IDT, gate(MODULE))
    assert {(f.index, f.verdict) for f in suspicious(guest)} == \
        {(0, OUTSIDE_TEXT), (0x80, WRONG_FUNCTION)}


def test_table_length_without_an_isf_type_stops_at_the_next_symbol(guest: dict) -> None:
    symbols = {**guest["symbols"], "sys_call_table": TABLE, "after_table": TABLE + 3 * 8}
    isf = write_isf(guest["tmp"] / "untyped.json", {"dummy": (8, {})}, symbols)
    findings = check_syscall_dispatch(kernel(guest["memory"], isf), known_calls())
    assert [f.name for f in findings if f.check == "sys_call_table"] == ["read", "write",
                                                                         "open"]


def test_branch_target_decodes_the_forms_inline_hooks_use() -> None:
    at = 0xFFFF_FFFF_8100_0000
    assert branch_target(b"\xe9" + struct.pack("<i", 0x100) + bytes(11), at) == at + 0x105
    assert branch_target(b"\xf3\x0f\x1e\xfa\xe8" + struct.pack("<i", -16) + bytes(7), at) \
        == at + 4 + 5 - 16
    assert branch_target(b"\x48\xb8" + struct.pack("<Q", MODULE) + b"\xff\xe0" + bytes(4),
                         at) == MODULE
    assert branch_target(b"\x68" + struct.pack("<i", -0x1000) + b"\xc3" + bytes(10), at) \
        == (1 << 64) - 0x1000
    assert branch_target(b"\x55\x48\x89\xe5" + bytes(12), at) is None


def test_same_call_under_the_compat_prefix_is_right_another_call_is_not(guest: dict) -> None:
    """Names drift between releases (5.10's ia32 get_mempolicy is the compat one, 6.1's is
    native): the same system call under another of the ABI's prefixes is not a hook."""
    compat, native, other = TEXT + 0x500, TEXT + 0x600, TEXT + 0x700
    guest["memory"].u64(TABLE + 0x100, compat, other)
    symbols = {**guest["symbols"], "__ia32_compat_sys_get_mempolicy": compat,
               "__ia32_sys_get_mempolicy": native, "__ia32_sys_getpid": other,
               "ia32_sys_call_table": {"address": TABLE + 0x100, "type": {
                   "kind": "array", "count": 2, "subtype": {"kind": "pointer"}}}}
    isf = write_isf(guest["tmp"] / "ia32.json", {"dummy": (8, {})}, symbols)
    known = {"i386": {0: ("get_mempolicy", "__ia32_sys_get_mempolicy"),
                      1: ("set_mempolicy", "__ia32_sys_set_mempolicy")}}
    findings = [f for f in check_syscall_dispatch(kernel(guest["memory"], isf), known)
                if f.check == "ia32_sys_call_table"]
    assert [(f.name, f.points_at, f.verdict) for f in findings] == [
        ("get_mempolicy", "__ia32_compat_sys_get_mempolicy", OK),
        ("set_mempolicy", "__ia32_sys_getpid", WRONG_FUNCTION)]


def test_entry_msrs_are_checked_where_the_target_reads_them(guest: dict) -> None:
    from xenhpt.vmi.x86.msr import MSR_CSTAR, MSR_LSTAR, MSR_SYSENTER_EIP

    memory = guest["memory"]
    memory.msrs = {MSR_LSTAR: FUNCTIONS["entry_SYSCALL_64"], MSR_CSTAR: 0,
                   MSR_SYSENTER_EIP: 0}
    findings = [f for f in check_syscall_dispatch(kernel(memory, guest["isf"]), known_calls())
                if f.check == "msr"]
    # (the synthetic kernel has no compat entries: only LSTAR has a symbol to compare with)
    assert [(f.name, f.verdict) for f in findings] == [("lstar", OK)]
    memory.msrs[MSR_LSTAR] = MODULE
    [hooked] = [f for f in suspicious(guest) if f.check == "msr"]
    assert (hooked.name, hooked.address, hooked.verdict) == ("lstar", MODULE, "outside kernel text")


def test_a_target_without_msrs_says_so_in_one_line_and_is_not_suspicious(guest: dict) -> None:
    findings = check_syscall_dispatch(kernel(guest["memory"], guest["isf"]), known_calls())
    [skipped] = [f for f in findings if f.check == "msr"]
    assert not skipped.suspicious
    assert "msr: not checked: this synthetic guest has no MSRs" in findings_text(findings)


def test_x86_64_kernel_dispatches_through_x64_sys_call(guest: dict) -> None:
    from xenhpt.linux.syscall_dispatch import dispatch_switch

    assert dispatch_switch(kernel(guest["memory"], guest["isf"])) == "x64_sys_call"
