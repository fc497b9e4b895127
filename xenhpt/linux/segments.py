"""The segment selectors and syscall MSR values Linux uses on x86-64 (asm/segment.h,
``syscall_init`` in arch/x86/kernel/cpu/common.c).

The CPU does not say which system-call ABI a ``syscall`` instruction uses; Linux decides by
the caller's code segment, and so does the capture plugin, which is handed the selector
(``CaptureConfig.user32_cs``) rather than knowing Linux itself.
"""

from __future__ import annotations

USER32_CS = 0x23  # __USER32_CS: 32-bit compat code; `syscall` from it is the i386 ABI

# What syscall_init writes to MSR_STAR and MSR_SYSCALL_MASK (the exception trap emulates
# syscall/sysret with them, since the gdbstub cannot read MSRs).
KERNEL_CS = 0x10  # __KERNEL_CS: STAR[47:32]
SYSRET_BASE = USER32_CS  # STAR[63:48]: sysretl -> 0x23, sysretq -> 0x33, SS 0x2b
# Linux 5.9 and later mask every arithmetic flag too; older kernels masked TF, DF, IF,
# IOPL, AC and NT only, and their entry code clears the rest itself (clean either way).
SYSCALL_MASK = 0x257FD5  # CF PF AF ZF SF TF IF DF OF IOPL NT RF AC ID
