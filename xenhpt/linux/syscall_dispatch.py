"""Is the guest's system-call dispatch intact? The tables, the entry code, the int 0x80 gate.

A rootkit that hooks system calls rewrites one of a few places, each checked here
against the profile's symbols (the kernel as it was built):

- the syscall tables (``sys_call_table``, and on x86-64 ``ia32_sys_call_table`` where the
  kernel has one): entry N must be the address of the function the kernel's own table
  names for N (``__x64_sys_read`` for 0 on x86-64, ``__ia32_sys_restart_syscall`` on
  i386: the caller hands in xenhpt's syscall tables as :data:`KnownCalls`, this layer
  does not import them), or of any of the ABI's ``sys_*`` / ``sys_ni_syscall`` functions
  for a number they do not know;
- the first instruction of the entry and dispatch code (``entry_SYSCALL_64`` or
  ``entry_INT80_32``, ``x64_sys_call``/``ia32_sys_call`` on kernels that dispatch through
  a switch instead of the table, ``do_syscall_64``…): a ``jmp``/``call`` out of the
  kernel's text there is an inline hook;
- the IDT: the ``int 0x80`` gate must lead to the kernel's int 0x80 entry
  (``asm_int80_emulation`` or ``entry_INT80_compat``; ``entry_INT80_32`` on i386), and no
  present gate may lead outside the kernel's text;
- where the target can read them (the Xen backend through LibVMI), the entry MSRs
  (IA32_LSTAR, IA32_CSTAR, IA32_SYSENTER_EIP; only the last on i386) of every vCPU
  against the entry symbols; elsewhere one ``not checked`` finding says why (QEMU's
  gdbstub has no MSRs, a memory image holds none).

What differs between x86-64 and i386 kernels (names, table ABIs, gate size, the early
handlers' size) is one :class:`DispatchArch` each, picked by the kernel's pointer size.
Each check is a :class:`Finding`; ``ok`` ones are kept so a caller can show everything.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import MemoryReadError, MsrUnavailable, XenhptError
from ..vmi.x86.branch import branch_target
from ..vmi.x86.idt import decode_gate, gate_size
from ..vmi.x86.msr import MSR_CSTAR, MSR_LSTAR, MSR_SYSENTER_EIP
from .kernel import Kernel


class KnownCall(NamedTuple):
    """What xenhpt's syscall table of one ABI says of one number: the call's name, its
    function in an x86-64 kernel (``__x64_sys_read``; for the i386 ABI the compat layer's,
    ``__ia32_compat_sys_ia32_mmap`` for mmap), and its function in a kernel whose own ABI
    it is (an i386 kernel's ``__ia32_sys_old_mmap``; None: the same as ``function``)."""

    name: str
    function: str | None
    native: str | None = None


# ABI ("x86_64", "i386") -> syscall number -> KnownCall (or its first two fields)
KnownCalls = Mapping[str, Mapping[int, tuple[str, str | None] | KnownCall]]

MAX_TABLE_ENTRIES = 1024  # x86-64 has ~460 system calls; a bigger table is a bad profile
IDT_VECTORS = 256
INT80 = 0x80
PROLOGUE_BYTES = 16

OK, OUTSIDE_TEXT, WRONG_FUNCTION, UNREADABLE, NOT_PRESENT, INLINE_HOOK, NOT_CHECKED = (
    "ok", "outside kernel text", "wrong function", "unreadable", "not present",
    "inline hook", "not checked")


class SyscallTableSpec(NamedTuple):
    """One syscall table: its symbol, the ABI of xenhpt's table for it, the prefixes of
    its functions' names, and whether its functions are the ABI's native ones (the
    kernel's own ABI) or a 64-bit kernel's compat layer."""

    symbol: str
    abi: str
    prefixes: tuple[str, ...]
    native: bool


@dataclass(frozen=True)
class DispatchArch:
    """Where a Linux kernel of one architecture dispatches system calls, by symbol."""

    name: str
    # The name for a number drifts between releases (5.10's compat get_mempolicy is native
    # in 6.1; bdflush went away): an entry is right if it is the function xenhpt's table
    # names or a function of the same system call under one of the table's prefixes.
    tables: tuple[SyscallTableSpec, ...]
    entry_code: tuple[str, ...]  # checked for an inline hook where the kernel has them
    int80_entries: tuple[str, ...]  # what the int 0x80 gate leads to (the first present)
    # (name, MSR, the entry symbols it may hold)
    entry_msrs: tuple[tuple[str, int, tuple[str, ...]], ...]
    ni_syscall: tuple[str, ...]
    switch: str  # the function that calls the syscall functions through a switch
    # EARLY_IDT_HANDLER_SIZE: 9, and 13 with an ENDBR64 (x86-64 kernels built with IBT)
    early_handler_sizes: tuple[int, ...]
    # vector -> the TSS selector of the kernel's task gates (i386's double fault:
    # GDT_ENTRY_DOUBLEFAULT_TSS, entry 31)
    task_gates: Mapping[int, int]


X86_64 = DispatchArch(
    name="x86-64",
    tables=(SyscallTableSpec("sys_call_table", "x86_64", ("__x64_sys_",), True),
            SyscallTableSpec("ia32_sys_call_table", "i386",
                             ("__ia32_sys_", "__ia32_compat_sys_"), False)),
    entry_code=("entry_SYSCALL_64", "entry_SYSCALL_compat", "entry_SYSENTER_compat",
                "entry_INT80_compat", "asm_int80_emulation", "int80_emulation",
                "do_syscall_64", "do_int80_syscall_32", "do_fast_syscall_32",
                "x64_sys_call", "ia32_sys_call"),
    int80_entries=("asm_int80_emulation", "entry_INT80_compat"),
    # CSTAR is ignore_sysret on kernels built without IA32 emulation; SYSENTER_EIP is 0
    # there (not checked then).
    entry_msrs=(("lstar", MSR_LSTAR, ("entry_SYSCALL_64",)),
                ("cstar", MSR_CSTAR, ("entry_SYSCALL_compat", "ignore_sysret")),
                ("sysenter_eip", MSR_SYSENTER_EIP,
                 ("entry_SYSENTER_compat", "entry_SYSENTER_32"))),
    ni_syscall=("sys_ni_syscall", "__x64_sys_ni_syscall", "__ia32_sys_ni_syscall"),
    switch="x64_sys_call",
    early_handler_sizes=(9, 13),
    task_gates={},
)

I386 = DispatchArch(
    name="i386",
    tables=(SyscallTableSpec("sys_call_table", "i386", ("__ia32_sys_",), True),),
    entry_code=("entry_INT80_32", "entry_SYSENTER_32", "do_int80_syscall_32",
                "do_fast_syscall_32", "__do_fast_syscall_32", "do_SYSENTER_32",
                "ia32_sys_call"),
    int80_entries=("entry_INT80_32",),
    # A 32-bit kernel never enters through syscall: LSTAR and CSTAR are not its own.
    entry_msrs=(("sysenter_eip", MSR_SYSENTER_EIP, ("entry_SYSENTER_32",)),),
    ni_syscall=("sys_ni_syscall", "__ia32_sys_ni_syscall"),
    switch="ia32_sys_call",
    early_handler_sizes=(9,),
    task_gates={8: 31 << 3},
)

ARCHES = {8: X86_64, 4: I386}  # by the kernel's pointer size

# Linux points every exception vector at early_idt_handler_array[vector] (in init text)
# at boot and later replaces only the vectors it uses: the reserved ones keep it.
EARLY_HANDLERS = "early_idt_handler_array"


def dispatch_arch(kernel: Kernel) -> DispatchArch:
    """The architecture's dispatch symbols for ``kernel``, by its pointer size."""
    return ARCHES[kernel.pointer_size]


@dataclass(frozen=True)
class Finding:
    """One checked place: which, where it leads, what it should lead to, the verdict."""

    check: str  # "sys_call_table", "idt", "entry code", "msr"
    index: int  # table entry, IDT vector, or -1
    name: str  # the system call, vector or symbol checked
    address: int  # where it leads (0 if unreadable)
    points_at: str  # the symbol there, as name or name+0xoff; "" if none
    expected: str
    verdict: str

    @property
    def suspicious(self) -> bool:
        return self.verdict not in (OK, NOT_CHECKED)


class KernelText:
    """The kernel image's code range and its symbols, slid, for naming addresses."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.start = kernel.symbol("_stext")
        self.end = kernel.symbol("_etext")
        # Only text symbols name addresses here, a third of a kernel's 80 000. Almost every
        # address checked is a symbol's own (a table entry, a gate, an entry point), so a
        # dict answers those; sorting them all for the rare address inside a function was
        # most of this check's time (0.2 s) and is done only if one comes up.
        slide = kernel.slide
        low, high = self.start - slide, self.end - slide
        at: dict[int, list[str]] = {}
        for name, address in kernel.profile.symbols.items():
            if low <= address < high:
                names = at.get(address + slide)
                if names is None:
                    at[address + slide] = [name]
                else:
                    names.append(name)
        self._at = at
        self._sorted: list[int] | None = None

    def contains(self, address: int) -> bool:
        return self.start <= address < self.end

    def names_at(self, address: int) -> list[str]:
        """Every symbol at exactly ``address`` (aliases included), sorted by name."""
        return sorted(self._at.get(address, ()))

    def describe(self, address: int, prefer: str = "") -> str:
        """``name`` or ``name+0xoff`` for an address in the kernel text; "" outside it."""
        if not self.contains(address):
            return ""
        exact = self.names_at(address)
        if exact:
            return next((n for n in exact if n.startswith(prefer)), exact[0]) if prefer \
                else exact[0]
        if self._sorted is None:
            self._sorted = sorted(self._at)
        i = bisect.bisect_right(self._sorted, address) - 1
        if i < 0:
            return ""
        base = self._sorted[i]
        return f"{min(self._at[base])}+{address - base:#x}"

    def next_symbol_after(self, address: int) -> int | None:
        """The lowest symbol address above ``address``, anywhere (a table is in data)."""
        slide = self.kernel.slide
        following = [a + slide for a in self.kernel.profile.symbols.values()
                     if a + slide > address]
        return min(following) if following else None


def check_tables(kernel: Kernel, text: KernelText, known: KnownCalls,
                 arch: DispatchArch | None = None) -> list[Finding]:
    """Every entry of every syscall table the kernel has."""
    arch = arch or dispatch_arch(kernel)
    word = kernel.pointer_size
    findings = []
    for symbol, abi, prefixes, native in arch.tables:
        if not kernel.has_symbol(symbol):
            continue
        base = kernel.symbol(symbol)
        count = table_length(kernel, text, symbol, base)
        try:
            raw = kernel.read(base, count * word)
        except MemoryReadError:
            findings.append(Finding(symbol, -1, symbol, 0, "", f"{count} entries",
                                    UNREADABLE))
            continue
        calls = known.get(abi, {})
        ni = {kernel.symbol(n) for n in arch.ni_syscall if kernel.has_symbol(n)}
        for nr in range(count):
            address = kernel.pointer_at(raw, nr * word)
            call = KnownCall(*calls[nr]) if nr in calls else KnownCall(f"syscall_{nr}", None)
            name = call.name
            named = nr in calls  # xenhpt knows the call for this number
            function = (call.native or call.function) if native else call.function
            wanted = function if function and kernel.has_symbol(function) else None
            expected = wanted or f"a {prefixes[0]}* function or sys_ni_syscall"
            points_at = text.describe(address, prefixes[0])
            here = text.names_at(address)
            same_call = any(p + name in here for p in prefixes)
            if not text.contains(address):
                verdict = OUTSIDE_TEXT
            elif wanted is not None:
                verdict = OK if address == kernel.symbol(wanted) or same_call \
                    else WRONG_FUNCTION
            elif named:  # not built into this kernel, or under a name of its own
                verdict = OK if address in ni or same_call else WRONG_FUNCTION
            else:  # a number newer than xenhpt's tables: any syscall function will do
                verdict = OK if address in ni or any(n.startswith(prefixes) for n in here) \
                    else WRONG_FUNCTION
            findings.append(Finding(symbol, nr, name, address, points_at, expected, verdict))
    return findings


def table_length(kernel: Kernel, text: KernelText, symbol: str, base: int) -> int:
    """Entries in a syscall table: the ISF's array type, else up to the next symbol."""
    count = kernel.profile.array_length(symbol)
    if count is None:
        following = text.next_symbol_after(base)
        count = (following - base) // kernel.pointer_size if following else MAX_TABLE_ENTRIES
    return max(0, min(count, MAX_TABLE_ENTRIES))


def check_entry_code(kernel: Kernel, text: KernelText,
                     arch: DispatchArch | None = None) -> list[Finding]:
    """The first instruction of each entry and dispatch function: no jump out of the text."""
    arch = arch or dispatch_arch(kernel)
    findings = []
    for symbol in arch.entry_code:
        if not kernel.has_symbol(symbol):
            continue
        address = kernel.symbol(symbol)
        try:
            code = kernel.read(address, PROLOGUE_BYTES)
        except MemoryReadError:
            findings.append(Finding("entry code", -1, symbol, address, "", symbol,
                                    UNREADABLE))
            continue
        target = branch_target(code, address, kernel.pointer_size)
        if target is None or text.contains(target):
            findings.append(Finding("entry code", -1, symbol, address, symbol, symbol, OK))
        else:
            findings.append(Finding("entry code", -1, symbol, target, text.describe(target),
                                    symbol, INLINE_HOOK))
    return findings


def check_idt(kernel: Kernel, text: KernelText,
              arch: DispatchArch | None = None) -> list[Finding]:
    """The int 0x80 gate against the kernel's int 0x80 entry; every gate inside the text."""
    arch = arch or dispatch_arch(kernel)
    if not kernel.has_symbol("idt_table"):
        return []
    size = gate_size(kernel.pointer_size)
    try:
        raw = kernel.read(kernel.symbol("idt_table"), IDT_VECTORS * size)
    except MemoryReadError:
        return [Finding("idt", -1, "idt_table", 0, "", "256 gates", UNREADABLE)]
    int80 = next((n for n in arch.int80_entries if kernel.has_symbol(n)), None)
    early = kernel.symbol(EARLY_HANDLERS) if kernel.has_symbol(EARLY_HANDLERS) else None
    findings = []
    for vector in range(IDT_VECTORS):
        gate = decode_gate(raw[vector * size : (vector + 1) * size], kernel.pointer_size)
        handler, present, name = gate.handler, gate.present, f"vector {vector:#04x}"
        if present and gate.is_task_gate:  # no handler address: a TSS to switch to
            tss = arch.task_gates.get(vector)
            findings.append(Finding("idt", vector, name, gate.selector,
                                    f"task gate, TSS selector {gate.selector:#x}",
                                    "no task gate" if tss is None else
                                    f"task gate, TSS selector {tss:#x}",
                                    OK if gate.selector == tss else WRONG_FUNCTION))
            continue
        if vector == INT80 and int80 is not None:
            expected = int80
            if not present:
                verdict = NOT_PRESENT
            elif not text.contains(handler):
                verdict = OUTSIDE_TEXT
            else:
                verdict = OK if handler == kernel.symbol(int80) else WRONG_FUNCTION
        elif not present:
            continue
        elif early is not None and vector < 32 and \
                handler in (early + vector * step for step in arch.early_handler_sizes):
            findings.append(Finding("idt", vector, name, handler,
                                    f"{EARLY_HANDLERS}+{handler - early:#x}",
                                    "boot's handler (unused vector)", OK))
            continue
        else:
            expected = "kernel text"
            verdict = OK if text.contains(handler) else OUTSIDE_TEXT
        findings.append(Finding("idt", vector, name, handler,
                                text.describe(handler), expected, verdict))
    return findings


def check_msrs(kernel: Kernel, text: KernelText,
               arch: DispatchArch | None = None) -> list[Finding]:
    """The entry MSRs of every vCPU; one ``not checked`` finding (the reason as its
    ``expected``) where the target cannot read MSRs."""
    arch = arch or dispatch_arch(kernel)
    target = kernel.target
    findings = []
    for vcpu in range(target.vcpu_count):
        for name, index, symbols in arch.entry_msrs:
            wanted = [kernel.symbol(s) for s in symbols if kernel.has_symbol(s)]
            if not wanted:
                continue  # (a kernel without that entry: nothing to compare with)
            try:
                value = target.read_msr(vcpu, index)
            except MsrUnavailable as exc:
                return [Finding("msr", -1, "entry MSRs", 0, "", str(exc), NOT_CHECKED)]
            except XenhptError as exc:
                findings.append(Finding("msr", vcpu, name, 0, "", str(exc), UNREADABLE))
                continue
            if name == "sysenter_eip" and value == 0:
                continue  # sysenter disabled (no IA32 emulation): nothing to hijack
            verdict = OK if value in wanted else (
                OUTSIDE_TEXT if not text.contains(value) else WRONG_FUNCTION)
            findings.append(Finding("msr", vcpu, name, value, text.describe(value),
                                    " or ".join(symbols), verdict))
    return findings


def dispatch_switch(kernel: Kernel) -> str | None:
    """The function that calls the syscall functions through a switch, if the kernel has
    one: ``x64_sys_call`` (``ia32_sys_call`` on i386) since 6.9 and in stable backports
    (Debian bookworm's later 6.1 updates). ``sys_call_table`` stays, unused for dispatch,
    so a rewritten entry there is a sign of tampering but not a working hook."""
    switch = dispatch_arch(kernel).switch
    return switch if kernel.has_symbol(switch) else None


def check_syscall_dispatch(kernel: Kernel, known: KnownCalls) -> list[Finding]:
    """All the checks, tables first."""
    text = KernelText(kernel)
    arch = dispatch_arch(kernel)
    return (check_tables(kernel, text, known, arch) + check_entry_code(kernel, text, arch)
            + check_idt(kernel, text, arch) + check_msrs(kernel, text, arch))
