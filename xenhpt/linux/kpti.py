"""Linux's page-table isolation (KPTI) seen from outside: the kernel twin of a user PGD.

With KPTI the CR3 of a task running in user mode holds its *user* PGD, which maps only
the entry trampoline of the kernel. Linux allocates the two PGDs of an address space as
one 8 KiB block, kernel first, so the user one is the kernel one with bit 12 set
(``PTI_USER_PGTABLE_BIT`` in arch/x86/include/asm/pgtable.h). The rule is Linux's, not
the CPU's: the ``vmi`` backends do not know it and are handed :func:`kernel_dtb` by
:class:`~xenhpt.linux.kernel.Kernel` (``Target.set_kernel_paging``).
"""

from __future__ import annotations

from ..vmi.x86.paging import dtb_from_cr3

PTI_USER_PGTABLE_BIT = 1 << 12


def kernel_dtb(cr3: int) -> int:
    """The kernel half of a KPTI PGD pair (identity for a kernel PGD).

    Clearing the bit on a kernel without KPTI, whose PGD may sit on an odd page (seen in
    the lab), would be wrong: callers try the CR3 as it is first (``dtb_from_cr3``).
    """
    return dtb_from_cr3(cr3) & ~PTI_USER_PGTABLE_BIT
