"""``xenhpt check-syscalls``: is the guest's system-call dispatch what the kernel built?"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..linux.syscall_dispatch import (
    KnownCall,
    KnownCalls,
    check_syscall_dispatch,
    dispatch_switch,
)
from ..output import syscall_dispatch as render
from ..syscalls.table import ABIS, SyscallTable
from .process import kernel_of, profile_option

EXIT_SUSPICIOUS = 3


def known_calls() -> KnownCalls:
    """Each ABI's syscall names and kernel functions, from xenhpt's generated tables."""
    return {abi: {t.nr: KnownCall(t.name, t.entry, t.entry_native)
                  for t in SyscallTable.load(abi)} for abi in ABIS}


@click.command(name="check-syscalls")
@click.argument("target", metavar="TARGET")
@click.option("--all", "show_all", is_flag=True, help="Show every checked entry, not only "
              "the suspicious ones.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finding.")
@profile_option
def check_syscalls(target: str, show_all: bool, as_json: bool,
                   profile_path: Path | None) -> None:
    """Check the system-call dispatch of TARGET against its profile: the syscall tables
    (64-bit and 32-bit on x86-64, the one table on i386), the first instruction of the
    entry and dispatch code (x64_sys_call or ia32_sys_call on kernels that dispatch
    through it), every IDT gate and the int 0x80 one, and, where the backend reports them,
    the entry MSRs. Anything that leads outside the kernel text or to the wrong function is
    listed; the exit status is 3 if anything is.

    TARGET is lab, qemu:HOST:PORT, xen:NAME|DOMID or a snapshot file (.raw, .elf, ...).

    \b
    Examples:
      xenhpt check-syscalls lab
      xenhpt check-syscalls guest.raw --all --json
    """
    with kernel_of(target, profile_path) as kernel:
        findings = check_syscall_dispatch(kernel, known_calls())
        notes = []
        switch = dispatch_switch(kernel)
        if switch:
            notes.append(f"this kernel calls the syscall functions from {switch}'s switch; "
                         "sys_call_table is checked but does not steer dispatch")
    if as_json:
        click.echo(render.findings_json(findings, show_all), nl=False)
    else:
        click.echo(render.findings_text(findings, show_all, notes), nl=False)
    if any(f.suspicious for f in findings):
        sys.exit(EXIT_SUSPICIOUS)
