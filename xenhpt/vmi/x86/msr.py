"""x86 model-specific registers that say where a system call enters the kernel.

Numbers from the Intel SDM vol. 4 / AMD APM vol. 2; a backend that can read MSRs reads
these by number, and the OS layer names what they should hold.
"""

from __future__ import annotations

MSR_SYSENTER_EIP = 0x176  # sysenter's entry point
MSR_LSTAR = 0xC000_0082  # 64-bit syscall's entry point
MSR_CSTAR = 0xC000_0083  # compat-mode syscall's entry point (AMD; kept by Intel CPUs too)

ENTRY_MSRS = {"lstar": MSR_LSTAR, "cstar": MSR_CSTAR, "sysenter_eip": MSR_SYSENTER_EIP}
