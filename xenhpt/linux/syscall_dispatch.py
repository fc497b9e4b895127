"""Is the guest's system-call dispatch intact? The tables, the entry code, the int 0x80 gate.

A rootkit that hooks system calls rewrites one of a few places, each checked here
against the profile's symbols (the kernel as it was built):

- the syscall tables (``sys_call_table``, and ``ia32_sys_call_table`` where the kernel
  has one): entry N must be the address of the function the kernel's own table names
  for N (``__x64_sys_read`` for 0: the caller hands in xenhpt's syscall tables as
  :data:`KnownCalls`, this layer does not import them), or of any ``__x64_sys_*`` /
  ``sys_ni_syscall`` function for a number they do not know;
- the first instruction of the entry and dispatch code (``entry_SYSCALL_64``, the compat
  entries, ``x64_sys_call``/``ia32_sys_call`` on kernels that dispatch through a switch
  instead of the table, ``do_syscall_64``…): a ``jmp``/``call`` out of the kernel's text
  there is an inline hook;
- the IDT: the ``int 0x80`` gate must lead to the kernel's int 0x80 entry
  (``asm_int80_emulation`` or ``entry_INT80_compat``), and no present gate may lead
  outside the kernel's text;
- where the target can read them (the Xen backend through LibVMI), the entry MSRs
  (IA32_LSTAR, IA32_CSTAR, IA32_SYSENTER_EIP) of every vCPU against the entry symbols;
  elsewhere one ``not checked`` finding says why (QEMU's gdbstub has no MSRs, a memory
  image holds none).

Each check is a :class:`Finding`; ``ok`` ones are kept so a caller can show everything.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import MemoryReadError, MsrUnavailable, XenhptError
from ..vmi.x86.msr import MSR_CSTAR, MSR_LSTAR, MSR_SYSENTER_EIP
from .kernel import Kernel

# ABI ("x86_64", "i386") -> syscall number -> (name, kernel function, e.g. __x64_sys_read)
KnownCalls = Mapping[str, Mapping[int, tuple[str, str | None]]]

MAX_TABLE_ENTRIES = 1024  # x86-64 has ~460 system calls; a bigger table is a bad profile
IDT_VECTORS = 256
GATE_SIZE = 16
INT80 = 0x80
PROLOGUE_BYTES = 16

OK, OUTSIDE_TEXT, WRONG_FUNCTION, UNREADABLE, NOT_PRESENT, INLINE_HOOK, NOT_CHECKED = (
    "ok", "outside kernel text", "wrong function", "unreadable", "not present",
    "inline hook", "not checked")

# (table symbol, ABI of xenhpt's syscall tables, prefixes of its functions' names). The
# name for a number drifts between releases (5.10's compat get_mempolicy is native in
# 6.1; bdflush went away): an entry is right if it is the function xenhpt's table names
# or a function of the same system call under one of these prefixes.
TABLES = (("sys_call_table", "x86_64", ("__x64_sys_",)),
          ("ia32_sys_call_table", "i386", ("__ia32_sys_", "__ia32_compat_sys_")))
ENTRY_CODE = ("entry_SYSCALL_64", "entry_SYSCALL_compat", "entry_SYSENTER_compat",
              "entry_INT80_compat", "asm_int80_emulation", "int80_emulation",
              "do_syscall_64", "do_int80_syscall_32", "do_fast_syscall_32",
              "x64_sys_call", "ia32_sys_call")
# (name, MSR, the entry symbols it may hold): CSTAR is ignore_sysret on kernels built
# without IA32 emulation; SYSENTER_EIP is 0 there (not checked then).
ENTRY_MSRS = (("lstar", MSR_LSTAR, ("entry_SYSCALL_64",)),
              ("cstar", MSR_CSTAR, ("entry_SYSCALL_compat", "ignore_sysret")),
              ("sysenter_eip", MSR_SYSENTER_EIP, ("entry_SYSENTER_compat", "entry_SYSENTER_32")))
INT80_ENTRIES = ("asm_int80_emulation", "entry_INT80_compat")
# Linux points every exception vector at early_idt_handler_array[vector] (in init text)
# at boot and later replaces only the vectors it uses: the reserved ones keep it.
EARLY_HANDLERS = "early_idt_handler_array"
EARLY_HANDLER_SIZES = (9, 13)  # EARLY_IDT_HANDLER_SIZE, without and with an ENDBR64
NI_SYSCALL = ("sys_ni_syscall", "__x64_sys_ni_syscall", "__ia32_sys_ni_syscall")


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


def check_tables(kernel: Kernel, text: KernelText, known: KnownCalls) -> list[Finding]:
    """Every entry of every syscall table the kernel has."""
    findings = []
    for symbol, abi, prefixes in TABLES:
        if not kernel.has_symbol(symbol):
            continue
        base = kernel.symbol(symbol)
        count = table_length(kernel, text, symbol, base)
        try:
            raw = kernel.read(base, count * 8)
        except MemoryReadError:
            findings.append(Finding(symbol, -1, symbol, 0, "", f"{count} entries",
                                    UNREADABLE))
            continue
        calls = known.get(abi, {})
        ni = {kernel.symbol(n) for n in NI_SYSCALL if kernel.has_symbol(n)}
        for nr, address in enumerate(struct.unpack(f"<{count}Q", raw)):
            name, function = calls.get(nr, (f"syscall_{nr}", None))
            named = nr in calls  # xenhpt knows the call for this number
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
        count = (following - base) // 8 if following else MAX_TABLE_ENTRIES
    return max(0, min(count, MAX_TABLE_ENTRIES))


def check_entry_code(kernel: Kernel, text: KernelText) -> list[Finding]:
    """The first instruction of each entry and dispatch function: no jump out of the text."""
    findings = []
    for symbol in ENTRY_CODE:
        if not kernel.has_symbol(symbol):
            continue
        address = kernel.symbol(symbol)
        try:
            code = kernel.read(address, PROLOGUE_BYTES)
        except MemoryReadError:
            findings.append(Finding("entry code", -1, symbol, address, "", symbol,
                                    UNREADABLE))
            continue
        target = branch_target(code, address)
        if target is None or text.contains(target):
            findings.append(Finding("entry code", -1, symbol, address, symbol, symbol, OK))
        else:
            findings.append(Finding("entry code", -1, symbol, target, text.describe(target),
                                    symbol, INLINE_HOOK))
    return findings


def branch_target(code: bytes, address: int) -> int | None:
    """Where the first instruction jumps or calls to, for the forms inline hooks use:
    ``jmp/call rel32``, ``jmp rel8``, ``movabs rax/r11, imm64; jmp reg``, ``push imm32; ret``
    (an ``endbr64`` first is skipped). None if it is none of them."""
    at = 4 if code[:4] == b"\xf3\x0f\x1e\xfa" else 0
    op = code[at]
    if op in (0xE8, 0xE9):
        return (address + at + 5 + struct.unpack_from("<i", code, at + 1)[0]) & (1 << 64) - 1
    if op == 0xEB:
        return (address + at + 2 + struct.unpack_from("<b", code, at + 1)[0]) & (1 << 64) - 1
    if code[at : at + 2] in (b"\x48\xb8", b"\x49\xbb") and \
            code[at + 10 : at + 12] in (b"\xff\xe0", b"\x41\xff"):
        return struct.unpack_from("<Q", code, at + 2)[0]
    if op == 0x68 and code[at + 5] == 0xC3:
        return struct.unpack_from("<i", code, at + 1)[0] & (1 << 64) - 1
    return None


def gate_target(gate: bytes) -> tuple[int, bool]:
    """(handler address, present) of one 16-byte x86-64 IDT gate."""
    low, _selector, _ist, attributes, middle, high = struct.unpack_from("<HHBBHI", gate)
    return low | middle << 16 | high << 32, bool(attributes & 0x80)


def check_idt(kernel: Kernel, text: KernelText) -> list[Finding]:
    """The int 0x80 gate against the kernel's int 0x80 entry; every gate inside the text."""
    if not kernel.has_symbol("idt_table"):
        return []
    try:
        raw = kernel.read(kernel.symbol("idt_table"), IDT_VECTORS * GATE_SIZE)
    except MemoryReadError:
        return [Finding("idt", -1, "idt_table", 0, "", "256 gates", UNREADABLE)]
    int80 = next((n for n in INT80_ENTRIES if kernel.has_symbol(n)), None)
    early = kernel.symbol(EARLY_HANDLERS) if kernel.has_symbol(EARLY_HANDLERS) else None
    findings = []
    for vector in range(IDT_VECTORS):
        handler, present = gate_target(raw[vector * GATE_SIZE : (vector + 1) * GATE_SIZE])
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
                handler in (early + vector * size for size in EARLY_HANDLER_SIZES):
            findings.append(Finding("idt", vector, f"vector {vector:#04x}", handler,
                                    f"{EARLY_HANDLERS}+{handler - early:#x}",
                                    "boot's handler (unused vector)", OK))
            continue
        else:
            expected = "kernel text"
            verdict = OK if text.contains(handler) else OUTSIDE_TEXT
        findings.append(Finding("idt", vector, f"vector {vector:#04x}", handler,
                                text.describe(handler), expected, verdict))
    return findings


def check_msrs(kernel: Kernel, text: KernelText) -> list[Finding]:
    """The entry MSRs of every vCPU; one ``not checked`` finding (the reason as its
    ``expected``) where the target cannot read MSRs."""
    target = kernel.target
    findings = []
    for vcpu in range(target.vcpu_count):
        for name, index, symbols in ENTRY_MSRS:
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


def dispatches_through_switch(kernel: Kernel) -> bool:
    """Kernels since 6.9 (and stable backports, Debian's 6.1.0-2x+) call the syscall
    functions from ``x64_sys_call``'s switch; ``sys_call_table`` stays, unused for
    dispatch, so a rewritten entry there is a sign of tampering but not a working hook."""
    return kernel.has_symbol("x64_sys_call")


def check_syscall_dispatch(kernel: Kernel, known: KnownCalls) -> list[Finding]:
    """All the checks, tables first."""
    text = KernelText(kernel)
    return (check_tables(kernel, text, known) + check_entry_code(kernel, text)
            + check_idt(kernel, text) + check_msrs(kernel, text))
