"""The instructions an INT3 displaces, executed by the tracer instead of the guest.

On Xen a breakpoint is a 0xCC byte written over the first byte of an instruction. When
it fires, the vCPU must go on as if that instruction had run. The usual ways (put the byte
back and single-step, or let Xen emulate) need monitor single-step or mem_access, which
AMD hosts do not offer. So the tracer executes the displaced instruction itself: it
computes the registers (and the one stack write) the instruction would have produced, and
hands them back with the event response. Only the few instruction forms that begin the
kernel's trap points are needed; this table names them all, and any other instruction is
refused before a byte is written (:class:`UnsupportedInstruction`).

Forms, from the Debian 6.1 kernel's trap points (``tools/xenlab`` decodes them):

* ``swapgs`` (0f 01 f8): the first instruction of ``entry_SYSCALL_64``,
  ``entry_SYSCALL_compat`` and ``entry_SYSENTER_compat``;
* ``clac``/``stac`` (0f 01 ca / cb) and the 3-byte NOP that alternatives leave in their
  place: ``asm_int80_emulation``;
* ``push %rbx`` and the other ``push`` forms: ``syscall_exit_to_user_mode``,
  ``do_syscall_64`` and most C functions;
* the 5-byte NOP (0f 1f 44 00 00) that ftrace leaves at every ``__x64_sys_*`` entry, and
  the ``call __fentry__`` / ``call ftrace_caller`` it is replaced by while ftrace is on;
* ``mov %rax,0x50(%rbx)``, the return site after ``call x64_sys_call`` in
  ``do_syscall_64`` (selective tracing traps it: the ``__x64_sys_*`` are tail-called);
* ``mov %r64,%r64`` (``mov %rdi,%rbx`` follows the ``push %rbx``);
* ``mov $-ENOSYS,%rax`` (``__x64_sys_ni_syscall``), ``endbr64`` (kernels built with IBT),
  ``mov %rsp,%rbp``, short and near ``jmp``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from ...errors import XenhptError

MASK64 = (1 << 64) - 1
EFLAGS_AC = 1 << 18
MAX_INSTRUCTION = 15  # the longest x86 instruction: how many bytes a decode may look at

# General registers by number (ModRM reg/rm; +8 with REX.R/REX.B).
_GPR = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
# push %r64 by register number (low 3 bits of the opcode; REX.B selects r8-r15).
_PUSH_REGISTERS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi")
_PUSH_REGISTERS_REX = ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


class UnsupportedInstruction(XenhptError):
    """A trap point starts with an instruction the tracer cannot execute in the guest's place."""


@dataclass(frozen=True)
class Effect:
    """What one instruction does: the registers it changes (always ``rip``) and, for a
    ``push`` or ``call``, the bytes it stores at a kernel virtual address."""

    registers: dict[str, int]
    memory_write: tuple[int, bytes] | None = None


@dataclass(frozen=True)
class InstructionForm:
    """One instruction encoding the emulator knows: exact leading bytes, total length."""

    name: str
    opcode: bytes
    length: int
    execute: Callable[[bytes, int, dict[str, int]], Effect] = field(repr=False)
    # For forms whose length depends on a ModRM byte: the length, or None if not this form.
    measure: Callable[[bytes], int | None] | None = field(default=None, repr=False)

    def length_of(self, code: bytes) -> int | None:
        """This form's length if ``code`` starts with it, else None."""
        if not code.startswith(self.opcode):
            return None
        length = self.length if self.measure is None else self.measure(code)
        return length if length is not None and len(code) >= length else None

    def matches(self, code: bytes) -> bool:
        return self.length_of(code) is not None


def _next(address: int, length: int) -> int:
    return (address + length) & MASK64


def _nop(code: bytes, address: int, registers: dict[str, int]) -> Effect:
    return Effect({"rip": _next(address, len(code))})


def _swapgs(code: bytes, address: int, registers: dict[str, int]) -> Effect:
    return Effect({"rip": _next(address, 3), "gs_base": registers["k_gs_base"],
                   "k_gs_base": registers["gs_base"]})


def _clac(code: bytes, address: int, registers: dict[str, int]) -> Effect:
    return Effect({"rip": _next(address, 3), "eflags": registers["eflags"] & ~EFLAGS_AC})


def _stac(code: bytes, address: int, registers: dict[str, int]) -> Effect:
    return Effect({"rip": _next(address, 3), "eflags": registers["eflags"] | EFLAGS_AC})


def _push_value(value: int, address: int, length: int, registers: dict[str, int],
                rip: int | None = None) -> Effect:
    rsp = (registers["rsp"] - 8) & MASK64
    return Effect({"rip": _next(address, length) if rip is None else rip, "rsp": rsp},
                  (rsp, struct.pack("<Q", value & MASK64)))


def _push(register: str, length: int) -> Callable[[bytes, int, dict[str, int]], Effect]:
    def execute(code: bytes, address: int, registers: dict[str, int]) -> Effect:
        # push %rsp stores the value rsp had before the instruction.
        return _push_value(registers[register], address, length, registers)

    return execute


def _mov_rsp_rbp(code: bytes, address: int, registers: dict[str, int]) -> Effect:
    return Effect({"rip": _next(address, 3), "rbp": registers["rsp"]})


def _call_rel32(code: bytes, address: int, registers: dict[str, int]) -> Effect:
    (displacement,) = struct.unpack_from("<i", code, 1)
    after = _next(address, 5)
    return _push_value(after, address, 5, registers, rip=(after + displacement) & MASK64)


def _jmp_rel32(code: bytes, address: int, registers: dict[str, int]) -> Effect:
    (displacement,) = struct.unpack_from("<i", code, 1)
    return Effect({"rip": (_next(address, 5) + displacement) & MASK64})


def _jmp_rel8(code: bytes, address: int, registers: dict[str, int]) -> Effect:
    (displacement,) = struct.unpack_from("<b", code, 1)
    return Effect({"rip": (_next(address, 2) + displacement) & MASK64})


def _mov_store_length(code: bytes) -> int | None:
    """``mov %r64, disp8/disp32(%r64)`` (REX.W 89 /r, mod 01/10, no SIB): its length."""
    if len(code) < 3:
        return None
    mod, rm = code[2] >> 6, code[2] & 7
    if rm == 4 or mod not in (1, 2):
        return None
    return 4 if mod == 1 else 7


def _mov_store(code: bytes, address: int, registers: dict[str, int]) -> Effect:
    """The return site after ``call x64_sys_call``: ``mov %rax,0x50(%rbx)`` (pt_regs->ax)."""
    rex, modrm = code[0], code[2]
    source = _GPR[((modrm >> 3) & 7) + (8 if rex & 4 else 0)]
    base = _GPR[(modrm & 7) + (8 if rex & 1 else 0)]
    if modrm >> 6 == 1:
        (displacement,) = struct.unpack_from("<b", code, 3)
        length = 4
    else:
        (displacement,) = struct.unpack_from("<i", code, 3)
        length = 7
    target = (registers[base] + displacement) & MASK64
    return Effect({"rip": _next(address, length)},
                  (target, struct.pack("<Q", registers[source] & MASK64)))


def _mov_reg_length(code: bytes) -> int | None:
    """``mov %r64,%r64`` (REX.W 89 /r, mod 11): 3 bytes."""
    return 3 if len(code) >= 3 and code[2] >> 6 == 3 else None


def _mov_reg(code: bytes, address: int, registers: dict[str, int]) -> Effect:
    """``mov %rdi,%rbx`` after ``push %rbx`` in ``syscall_exit_to_user_mode`` (the
    3-byte ``sldt`` trap displaces both); without REX.W (``movl %esp,%r8d`` in
    ``entry_SYSCALL_compat``) the 32-bit result is zero-extended."""
    rex, modrm = code[0], code[2]
    source = _GPR[((modrm >> 3) & 7) + (8 if rex & 4 else 0)]
    destination = _GPR[(modrm & 7) + (8 if rex & 1 else 0)]
    value = registers[source] if rex & 8 else registers[source] & 0xFFFF_FFFF
    return Effect({"rip": _next(address, 3), destination: value})


def _mov_gs_store_length(code: bytes) -> int | None:
    """``mov %r64,%gs:disp32`` (65 REX.W 89 /r, ModRM mod 00 rm 100, SIB 0x25): 9 bytes."""
    if len(code) < 9 or code[3] & 0xC7 != 0x04 or code[4] != 0x25:
        return None
    return 9


def _mov_gs_store(code: bytes, address: int, registers: dict[str, int]) -> Effect:
    """``mov %rsp,%gs:0x6014`` right after ``swapgs`` in ``entry_SYSCALL_64`` (where the
    ``sldt`` trap goes, so the guest runs ``swapgs`` itself)."""
    rex, modrm = code[1], code[3]
    source = _GPR[((modrm >> 3) & 7) + (8 if rex & 4 else 0)]
    (displacement,) = struct.unpack_from("<i", code, 5)
    target = (registers["gs_base"] + displacement) & MASK64
    return Effect({"rip": _next(address, 9)},
                  (target, struct.pack("<Q", registers[source] & MASK64)))


def _mov_imm_rax(code: bytes, address: int, registers: dict[str, int]) -> Effect:
    (value,) = struct.unpack_from("<i", code, 3)
    return Effect({"rip": _next(address, 7), "rax": value & MASK64})


FORMS: tuple[InstructionForm, ...] = (
    InstructionForm("swapgs", b"\x0f\x01\xf8", 3, _swapgs),
    InstructionForm("clac", b"\x0f\x01\xca", 3, _clac),
    InstructionForm("stac", b"\x0f\x01\xcb", 3, _stac),
    InstructionForm("endbr64", b"\xf3\x0f\x1e\xfa", 4, _nop),
    InstructionForm("nop", b"\x90", 1, _nop),
    InstructionForm("xchg %ax,%ax", b"\x66\x90", 2, _nop),
    InstructionForm("nopl (%rax)", b"\x0f\x1f\x00", 3, _nop),
    InstructionForm("nopl 0(%rax)", b"\x0f\x1f\x40\x00", 4, _nop),
    InstructionForm("nopl 0(%rax,%rax,1)", b"\x0f\x1f\x44\x00\x00", 5, _nop),
    InstructionForm("nopw 0(%rax,%rax,1)", b"\x66\x0f\x1f\x44\x00\x00", 6, _nop),
    InstructionForm("nopl 0L(%rax)", b"\x0f\x1f\x80\x00\x00\x00\x00", 7, _nop),
    InstructionForm("nopl 0L(%rax,%rax,1)", b"\x0f\x1f\x84\x00\x00\x00\x00\x00", 8, _nop),
    InstructionForm("nopw 0L(%rax,%rax,1)", b"\x66\x0f\x1f\x84\x00\x00\x00\x00\x00", 9, _nop),
    InstructionForm("mov %rsp,%rbp", b"\x48\x89\xe5", 3, _mov_rsp_rbp),
    *(InstructionForm("mov %reg,disp(%reg)", bytes([rex, 0x89]), 0, _mov_store,
                      _mov_store_length) for rex in range(0x48, 0x50)),
    *(InstructionForm("mov %reg,%reg", bytes([rex, 0x89]), 0, _mov_reg, _mov_reg_length)
      for rex in range(0x40, 0x50)),
    *(InstructionForm("mov %reg,%gs:disp32", bytes([0x65, rex, 0x89]), 0, _mov_gs_store,
                      _mov_gs_store_length) for rex in range(0x48, 0x50)),
    InstructionForm("mov $imm32,%rax", b"\x48\xc7\xc0", 7, _mov_imm_rax),
    InstructionForm("call rel32", b"\xe8", 5, _call_rel32),
    InstructionForm("jmp rel32", b"\xe9", 5, _jmp_rel32),
    InstructionForm("jmp rel8", b"\xeb", 2, _jmp_rel8),
    *(InstructionForm(f"push %{name}", bytes([0x50 + n]), 1, _push(name, 1))
      for n, name in enumerate(_PUSH_REGISTERS)),
    *(InstructionForm(f"push %{name}", bytes([0x41, 0x50 + n]), 2, _push(name, 2))
      for n, name in enumerate(_PUSH_REGISTERS_REX)),
)
SUPPORTED = ", ".join(dict.fromkeys("push" if form.name.startswith("push") else form.name
                                    for form in FORMS))


def decode(code: bytes, address: int = 0) -> InstructionForm:
    """The form of the instruction that starts ``code`` (the original bytes at ``address``).

    Raises :class:`UnsupportedInstruction` (one line naming the bytes) for anything else.
    Longer opcodes come first in the table's matching, so ``66 90`` is not read as a prefix.
    """
    for form in sorted(FORMS, key=lambda f: -len(f.opcode)):
        if form.matches(code):
            return form
    shown = code[:8].hex(" ") or "nothing"
    raise UnsupportedInstruction(
        f"cannot trap {address:#x}: its first instruction ({shown} ...) is not one the "
        f"tracer can execute in the guest's place (supported: {SUPPORTED})")


def emulate(form: InstructionForm, code: bytes, address: int,
            registers: dict[str, int]) -> Effect:
    """Execute ``form`` (decoded from ``code`` at ``address``) on ``registers``.

    ``registers`` are the vCPU's at the breakpoint (``rip`` == ``address``); they are not
    changed: the result lists the new values.
    """
    length = form.length_of(code)
    if length is None:
        raise UnsupportedInstruction(f"{address:#x}: the bytes are not a {form.name}")
    return form.execute(bytes(code[:length]), address, registers)
