"""The instruction emulator shared by the gdbstub and Xen backends."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from xenhpt.lab import machine
from xenhpt.tracer.trappoints import EXIT_FUNCTION
from xenhpt.vmi.x86.emulate import EFLAGS_AC, UnsupportedInstruction, decode, emulate

from .conftest import lab_kernel

AT = 0xFFFF_FFFF_81C0_0080


@pytest.fixture(scope="module")
def lab_image_and_symbols() -> tuple[Path, dict]:
    """The kernel the lab fetched and its profile's symbols (both made by 'make setup')."""
    kernel = lab_kernel()
    profile = machine.profile_path(kernel.release)
    if not profile.is_file():
        message = f"no lab profile {profile} ('make setup' builds it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return kernel.image, json.loads(profile.read_text())["symbols"]


def regs(**changes: int) -> dict[str, int]:
    base = {name: 0x1000 + n for n, name in enumerate((
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15"))}
    base.update(rip=AT, eflags=0x246, gs_base=0, k_gs_base=0xFFFF_8880_3FC0_0000,
                rsp=0xFFFF_C900_0001_3F58)
    base.update(changes)
    return base


def run(code: bytes, before: dict[str, int]):
    return emulate(decode(code, AT), code + b"\xcc" * 16, AT, before)


def test_swapgs_swaps_gs_base_and_kernel_gs_base_and_advances_rip():
    before = regs()
    effect = run(bytes.fromhex("0f01f8") + bytes.fromhex("654889242514600000"), before)
    assert effect.registers == {"rip": AT + 3, "gs_base": 0xFFFF_8880_3FC0_0000,
                                "k_gs_base": 0}
    assert effect.memory_write is None
    assert before["gs_base"] == 0  # the input is not modified


@pytest.mark.parametrize("code", ["f30f1efa", "0f1f440000", "90", "6690", "0f1f00",
                                  "0f1f4000", "660f1f440000", "0f1f8000000000",
                                  "0f1f840000000000", "660f1f840000000000"])
def test_nop_forms_only_advance_rip_by_their_length(code):
    raw = bytes.fromhex(code)
    assert run(raw, regs()).registers == {"rip": AT + len(raw)}


def test_push_rbx_stores_rbx_below_the_stack_pointer():
    before = regs(rbx=0x1122_3344_5566_7788)
    effect = run(b"\x53\x48\x89\xfb", before)
    assert effect.registers == {"rip": AT + 1, "rsp": before["rsp"] - 8}
    assert effect.memory_write == (before["rsp"] - 8, struct.pack("<Q", 0x1122_3344_5566_7788))


def test_push_r15_is_two_bytes_and_push_rsp_stores_the_old_rsp():
    before = regs(r15=7)
    effect = run(b"\x41\x57", before)
    assert effect.registers["rip"] == AT + 2
    assert effect.memory_write == (before["rsp"] - 8, struct.pack("<Q", 7))
    effect = run(b"\x54", before)
    assert effect.memory_write == (before["rsp"] - 8, struct.pack("<Q", before["rsp"]))


def test_mov_rsp_rbp_copies_the_stack_pointer():
    before = regs()
    assert run(b"\x48\x89\xe5", before).registers == {"rip": AT + 3, "rbp": before["rsp"]}


def test_call_rel32_pushes_the_return_address_and_jumps():
    before = regs()
    effect = run(bytes.fromhex("e87bded1ff"), before)  # __x64_sys_read: call __fentry__
    after = AT + 5
    assert effect.registers == {"rip": (after - 0x2E2185) & (2**64 - 1),
                                "rsp": before["rsp"] - 8}
    assert effect.memory_write == (before["rsp"] - 8, struct.pack("<Q", after))


def test_jumps_go_to_their_target():
    assert run(b"\xeb\x12", regs()).registers == {"rip": AT + 2 + 0x12}
    assert run(b"\xeb\xfe", regs()).registers == {"rip": AT}
    assert run(bytes.fromhex("e9fbfeffff"), regs()).registers == {"rip": AT + 5 - 0x105}


def test_clac_and_stac_change_only_eflags_ac():
    before = regs(eflags=0x246 | EFLAGS_AC)
    assert run(bytes.fromhex("0f01ca"), before).registers == {"rip": AT + 3, "eflags": 0x246}
    assert run(bytes.fromhex("0f01cb"), regs()).registers == {"rip": AT + 3,
                                                              "eflags": 0x246 | EFLAGS_AC}


def test_the_return_site_store_writes_rax_into_pt_regs():
    before = regs(rax=0xFFFF_FFFF_FFFF_FFFE, rbx=0xFFFF_C900_0001_3F58)
    effect = run(bytes.fromhex("48894350") + bytes.fromhex("4889df"), before)
    assert effect.registers == {"rip": AT + 4}
    assert effect.memory_write == (before["rbx"] + 0x50, struct.pack("<Q", before["rax"]))
    effect = run(bytes.fromhex("4c89b3f0000000"), before)  # mov %r14,0xf0(%rbx)
    assert effect.registers == {"rip": AT + 7}
    assert effect.memory_write == (before["rbx"] + 0xF0, struct.pack("<Q", before["r14"]))


def test_mov_imm32_to_rax_sign_extends():
    assert run(bytes.fromhex("48c7c0daffffff"), regs()).registers == {
        "rip": AT + 7, "rax": 2**64 - 38}


@pytest.mark.parametrize("code", ["4883ec20", "48890424", "488903", "65488b04", "0f01f9", "", "cc"])
def test_an_instruction_it_cannot_execute_is_refused_with_its_bytes(code):
    with pytest.raises(UnsupportedInstruction, match=f"cannot trap {AT:#x}.*not one the tracer"):
        decode(bytes.fromhex(code), AT)


def test_every_trap_point_of_the_lab_kernel_can_be_executed(lab_image_and_symbols):
    """The real first bytes of this kernel's trap points (full and selective plans)."""
    from xenhpt.profile.kimage import KernelImage

    path, symbols = lab_image_and_symbols
    image = KernelImage.open(path)
    names = ["entry_SYSCALL_64", "entry_SYSCALL_compat", "entry_SYSENTER_compat",
             "asm_int80_emulation", EXIT_FUNCTION]
    names += [n for n in symbols if n.startswith(("__x64_sys_", "__ia32_sys_"))
              and not n.endswith(".cold")]
    decoded = {}
    for name in names:
        if name in symbols and "address" in symbols[name]:
            address = symbols[name]["address"]
            decoded[name] = decode(image.read(address, 15), address).name
    assert decoded["entry_SYSCALL_64"] == "swapgs"
    assert decoded["entry_SYSENTER_compat"] == "swapgs"
    assert decoded[EXIT_FUNCTION] == "push %rbx"
    # In the image every syscall function starts with 'call __fentry__'; at run time ftrace
    # turns it into the 5-byte NOP (0f 1f 44 00 00), which is a supported form too.
    assert decoded["__x64_sys_read"] == "call rel32"
    assert len(decoded) > 600
    # Selective mode also traps the return site after 'call x64_sys_call' in do_syscall_64.
    start = symbols["do_syscall_64"]["address"]
    body = image.read(start, 0x200)
    target = symbols["x64_sys_call"]["address"]
    sites = [start + i + 5 for i in range(len(body) - 5) if body[i] == 0xE8
             and (start + i + 5 + struct.unpack_from("<i", body, i + 1)[0]) % 2**64 == target]
    assert sites and all(decode(image.read(site, 15), site).name == "mov %reg,disp(%reg)"
                         for site in sites)


def test_mov_between_registers_and_the_32_bit_form_zero_extends():
    before = regs(rdi=0xFFFF_C900_0001_3F58, rsp=0x7FFF_1234_5678)
    assert run(bytes.fromhex("4889fb"), before).registers == {   # mov %rdi,%rbx
        "rip": AT + 3, "rbx": 0xFFFF_C900_0001_3F58}
    assert run(bytes.fromhex("4189e0"), before).registers == {   # movl %esp,%r8d
        "rip": AT + 3, "r8": 0x1234_5678}


def test_mov_rsp_to_a_gs_relative_per_cpu_slot():
    before = regs(gs_base=0xFFFF_8880_3FC0_0000, rsp=0x7FFF_0000_1000)
    effect = run(bytes.fromhex("654889242514600000"), before)  # mov %rsp,%gs:0x6014
    assert effect.registers == {"rip": AT + 9}
    assert effect.memory_write == (0xFFFF_8880_3FC0_6014, struct.pack("<Q", 0x7FFF_0000_1000))


def test_every_trap_point_of_the_lab_kernel_takes_the_3_byte_sldt_trap(lab_image_and_symbols):
    """XENHPT_XEN_TRAP=sldt (the QEMU Xen lab): after a leading swapgs (which the guest
    runs itself), the instructions covering 3 bytes can all be executed by the tracer."""
    from xenhpt.profile.kimage import KernelImage
    from xenhpt.vmi.xen.breakpoints import displaced_steps

    path, symbols = lab_image_and_symbols
    image = KernelImage.open(path)
    shapes = {}
    for name in ("entry_SYSCALL_64", "entry_SYSCALL_compat", "entry_SYSENTER_compat",
                 "asm_int80_emulation", EXIT_FUNCTION, "__x64_sys_read"):
        address = symbols[name]["address"]
        code = image.read(address, 15)
        if code.startswith(bytes.fromhex("0f01f8")):
            address, code = address + 3, image.read(address + 3, 15)
        shapes[name] = [step.form.name for step in displaced_steps(code, address, 3)]
    assert shapes["entry_SYSCALL_64"] == ["mov %reg,%gs:disp32"]
    assert shapes["entry_SYSCALL_compat"] == ["mov %reg,%reg"]
    assert shapes[EXIT_FUNCTION] == ["push %rbx", "mov %reg,%reg"]
