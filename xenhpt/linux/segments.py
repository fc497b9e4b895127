"""The code segment selectors Linux gives user mode on x86-64 (arch/x86/include/asm/segment.h).

The CPU does not say which system-call ABI a ``syscall`` instruction uses; Linux decides by
the caller's code segment, and so does the capture plugin, which is handed the selector
(``CaptureConfig.user32_cs``) rather than knowing Linux itself.
"""

from __future__ import annotations

USER32_CS = 0x23  # __USER32_CS: 32-bit compat code; `syscall` from it is the i386 ABI
