"""The exception trap's instruction arithmetic (``vmi/x86/fast_syscall.py``), no VM: what
``syscall`` and ``sysret`` leave in the registers, per the instruction set, with Linux's
STAR and FMASK; the fault frame; the sysret sites in a stub's bytes; and the kernel on
which there is nothing to make fault."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest

from xenhpt.errors import BadUsage
from xenhpt.linux.segments import KERNEL_CS, SYSCALL_MASK, SYSRET_BASE
from xenhpt.tracer.exception_capture import ExceptionCapture
from xenhpt.vmi.x86 import fast_syscall as fs

LINUX = fs.SyscallSegments(KERNEL_CS, SYSRET_BASE, SYSCALL_MASK)
USER = fs.UserState(rip=0x401000, cs=0x33, rflags=0x10246 | 0x200, rsp=0x7FFD0000, ss=0x2B)


def test_the_fault_frame_is_read_as_the_cpu_pushes_it() -> None:
    frame = struct.pack("<5Q", USER.rip, USER.cs, USER.rflags, USER.rsp, USER.ss)
    assert fs.user_state_of_fault(frame + b"more") == USER and USER.from_user
    assert not fs.UserState(0, 0x10, 0, 0, 0).from_user


def test_syscall_enters_the_kernel_as_the_instruction_would() -> None:
    after = fs.syscall_effect(USER, 0xFFFFFFFF81C00080, LINUX)
    assert after["rip"] == 0xFFFFFFFF81C00080
    assert after["rcx"] == USER.rip + 2 and after["r11"] == USER.rflags
    assert after["cs"] == 0x10 and after["ss"] == 0x18 and after["rsp"] == USER.rsp
    # IF, TF, RF, the arithmetic flags: masked; bit 1 always set.
    assert after["eflags"] == 0x2


def test_sysret_returns_to_64_or_32_bit_user_code() -> None:
    registers = {"rcx": 0x7F00_1234_5678, "r11": 0x10246 | 0x200}
    back = fs.sysret_effect(registers, True, LINUX)
    assert back == {"rip": 0x7F00_1234_5678, "eflags": 0x246 | 0x2, "cs": 0x33, "ss": 0x2B}
    back32 = fs.sysret_effect(registers, False, LINUX)
    assert back32["rip"] == 0x1234_5678 and back32["cs"] == 0x23 and back32["ss"] == 0x2B


def test_undoing_the_fault_runs_the_instruction_again() -> None:
    assert fs.undo_fault(USER) == {"rip": USER.rip, "cs": 0x33, "eflags": USER.rflags,
                                   "rsp": USER.rsp, "ss": 0x2B}


def test_sysret_sites_are_found_after_swapgs_across_patched_out_mitigations() -> None:
    # Debian 6.1's entry_SYSRETQ_unsafe_stack: swapgs; jmp +7 over verw; sysretq.
    quad = bytes.fromhex("0f01f8eb070f002d19feffff480f07cc")
    # ... and the compat return: swapgs; jmp over verw; sysretl.
    long = bytes.fromhex("0f01f8eb070f002d90e6ffff0f07cc66")
    code = b"\x90" * 16 + quad + b"\x90" * 8 + long + b"\x0f\x01\xf8\x48\xcf"  # + an iretq
    sites = fs.sysret_sites(code, 0x1000)
    assert sites == [(0x1000 + 16 + 12, True), (0x1000 + 16 + 16 + 8 + 12, False)]


def test_the_exception_trap_on_a_32_bit_kernel_is_refused_in_one_line() -> None:
    """An i386 kernel has no syscall path to make fault, and the gdbstub cannot break
    int 0x80's or sysenter's conditions: the user is told which capture to use."""
    kernel = SimpleNamespace(pointer_size=4)
    target = SimpleNamespace(description="qemu:lab", write_registers=lambda *a: None)
    with pytest.raises(BadUsage, match="32-bit kernel.*--capture breakpoints"):
        ExceptionCapture(target, kernel, engine=None)  # type: ignore[arg-type]
