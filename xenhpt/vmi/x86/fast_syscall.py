"""What ``syscall`` and ``sysret`` do to a vCPU, for a tracer that makes them fault.

The exception trap (``--method exception``, the method xenhpt grew from) clears
``EFER.SCE``: every ``syscall`` and ``sysret`` then raises ``#UD`` instead of running. The
tracer catches the fault and does what the instruction would have done, so the guest never
sees it. This module is that arithmetic, per the instruction set (AMD APM vol. 3,
SYSCALL/SYSRET; Intel SDM vol. 2B), given the values the guest OS put in the MSRs
(``STAR`` selectors, ``FMASK``), which the gdbstub cannot read and the caller supplies:

* ``syscall`` from user mode: RCX = the next instruction, R11 = RFLAGS, RFLAGS &= ~FMASK,
  CS = STAR[47:32], SS = STAR[47:32] + 8, RIP = LSTAR (64-bit code) or CSTAR (compat).
  RSP is the user's: the instruction does not switch stacks.
* ``sysret``: RIP = RCX (ECX for ``sysretl``), RFLAGS = R11 (reserved bits fixed),
  CS = STAR[63:48] + 16 (64-bit) or STAR[63:48] (32-bit), SS = STAR[63:48] + 8, RPL 3.

The fault itself: a ``#UD`` from user mode enters the kernel through its IDT gate with the
user's RIP, CS, RFLAGS, RSP and SS pushed on the kernel stack (no error code). The frame
is what :func:`user_state_of_fault` reads; nothing else of the user's state changed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SYSCALL_OPCODE = b"\x0f\x05"
SWAPGS = b"\x0f\x01\xf8"
SYSRETQ = b"\x48\x0f\x07"  # REX.W sysret: back to 64-bit code
SYSRETL = b"\x0f\x07"  # back to 32-bit compat code
EFER_SCE = 1  # IA32_EFER bit 0: SYSCALL/SYSRET enabled
RFLAGS_RESERVED = 1 << 1  # always reads as 1
RFLAGS_RF = 1 << 16  # syscall clears it whatever FMASK says
# Bits sysret cannot set in RFLAGS (RF, VM, VIF, VIP are cleared: APM "SYSRET").
SYSRET_RFLAGS_MASK = 0x3C7FD7
_FRAME = struct.Struct("<5Q")  # RIP, CS, RFLAGS, RSP, SS, as the CPU pushes them


@dataclass(frozen=True)
class SyscallSegments:
    """What the guest OS put in ``STAR`` and ``FMASK`` (the gdbstub cannot read MSRs)."""

    kernel_cs: int  # STAR[47:32]
    sysret_base: int  # STAR[63:48]
    fmask: int


@dataclass(frozen=True)
class UserState:
    """The registers a user-mode fault saved on the kernel stack."""

    rip: int
    cs: int
    rflags: int
    rsp: int
    ss: int

    @property
    def from_user(self) -> bool:
        return self.cs & 3 == 3


def user_state_of_fault(frame: bytes) -> UserState:
    """The user's RIP, CS, RFLAGS, RSP and SS from the 40 bytes at the handler's RSP."""
    return UserState(*_FRAME.unpack(frame[:_FRAME.size]))


FRAME_SIZE = _FRAME.size


def syscall_effect(user: UserState, entry: int, segments: SyscallSegments
                   ) -> dict[str, int]:
    """The registers after ``syscall`` at ``user.rip`` (the rest are the user's, as the
    fault left them): the vCPU then runs the kernel's entry point ``entry``."""
    return {"rip": entry, "rcx": user.rip + len(SYSCALL_OPCODE), "r11": user.rflags,
            "eflags": (user.rflags & ~segments.fmask & ~RFLAGS_RF) | RFLAGS_RESERVED,
            "cs": segments.kernel_cs, "ss": segments.kernel_cs + 8, "rsp": user.rsp}


def sysret_effect(registers: dict[str, int], to_64bit: bool, segments: SyscallSegments
                  ) -> dict[str, int]:
    """The registers after ``sysretq`` (``to_64bit``) or ``sysretl``, run in the kernel's
    place: back in user mode at RCX with R11's flags."""
    rip = registers["rcx"] if to_64bit else registers["rcx"] & 0xFFFF_FFFF
    cs = (segments.sysret_base + (16 if to_64bit else 0)) | 3
    return {"rip": rip, "eflags": (registers["r11"] & SYSRET_RFLAGS_MASK) | RFLAGS_RESERVED,
            "cs": cs, "ss": (segments.sysret_base + 8) | 3}


def undo_fault(user: UserState) -> dict[str, int]:
    """The registers as they were before the fault (the faulting instruction runs again):
    what a guardian does for a vCPU a killed tracer left at the fault's handler."""
    return {"rip": user.rip, "cs": user.cs, "eflags": user.rflags, "rsp": user.rsp,
            "ss": user.ss}


# How far after a swapgs the sysret may come: kernels put a patched-out mitigation
# between them (6.1 backports: `jmp` over `verw`, CLEAR_CPU_BUFFERS).
SYSRET_AFTER_SWAPGS = 32


def sysret_sites(code: bytes, start: int) -> list[tuple[int, bool]]:
    """Where a kernel entry stub's code returns with ``swapgs ... sysretq`` or ``swapgs ...
    sysretl``: (address of the sysret, back to 64-bit code?)."""
    sites = []
    at = code.find(SWAPGS)
    while at >= 0:
        window = code[at + len(SWAPGS):at + len(SWAPGS) + SYSRET_AFTER_SWAPGS]
        quad, long = window.find(SYSRETQ), window.find(SYSRETL)
        if quad >= 0 and quad + 1 == long:
            long = -1  # (sysretq's own 0f 07)
        found = [(quad, True)] if quad >= 0 else []
        found += [(long, False)] if long >= 0 else []
        if found:
            offset, to_64bit = min(found)
            sites.append((start + at + len(SWAPGS) + offset, to_64bit))
        at = code.find(SWAPGS, at + len(SWAPGS))
    return sorted(set(sites))
