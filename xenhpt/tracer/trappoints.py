"""Where the tracer traps, and how it reads a call at each place (see docs/tracing.md).

Full tracing traps the mechanism's own entry stub, so every record knows exactly
which instruction made the call:

==================================  ==========  =======  =================================
symbol                              mechanism   ABI      where the CPU arrives from
==================================  ==========  =======  =================================
``entry_SYSCALL_64``                syscall     x86_64   MSR_LSTAR
``entry_SYSCALL_compat``            syscall     i386     MSR_CSTAR (32-bit ``syscall``)
``entry_SYSENTER_compat``           sysenter    i386     MSR_SYSENTER_EIP
``entry_INT80_compat`` or           int80       i386     IDT vector 0x80 (Debian's 6.1.192
``asm_int80_emulation``                                  backports the IDTENTRY form)
``entry_SYSENTER_32``               sysenter    i386     MSR_SYSENTER_EIP (i386 kernel)
``entry_INT80_32``                  int80       i386     IDT vector 0x80 (i386 kernel)
``syscall_exit_to_user_mode``       (exit)      any      every syscall return path
``bprm_execve``                     (exec)      any      an exec's arguments, readable again
==================================  ==========  =======  =================================

The capture plugin also names a caller it could not read at the instruction (KPTI) at
the first C function of the entry path (:data:`IDENTITY_FUNCTIONS`).

At an entry stub the registers still hold the user's: number in rax, arguments in
registers (below). At ``syscall_exit_to_user_mode(regs)`` rdi points at ``pt_regs``
(an i386 kernel is built with ``-mregparm=3``: there eax does, see :func:`first_argument`).

Selective tracing traps only ``__x64_sys_NAME`` / ``__ia32_sys_NAME`` of the chosen calls
(their first argument, rdi or eax, is ``pt_regs``; the arguments' fields there:
:data:`PT_REGS_ARGUMENTS`), and the return address found on the stack there, armed only
while such a call is in flight. Calls outside the selection cost no trap at all. The
mechanism is still exact there: every entry stub builds ``pt_regs`` on the stack and calls
its C entry function right away, so the word just below ``pt_regs`` is a return address
into the stub the CPU arrived at (:func:`stub_of_return`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ProfileError
from ..linux.kernel import Kernel
from ..syscalls.table import SyscallTable, Template
from ..vmi.x86.fast_syscall import sysret_sites

# Registers holding arguments 1..6 at an entry stub (i386 variants differ in args 2 and 6).
ARGS_X86_64 = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
ARGS_INT80 = ("rbx", "rcx", "rdx", "rsi", "rdi", "rbp")
# 32-bit SYSCALL clobbers ecx, so the vDSO passes arg 2 in ebp; arg 6 is at the user's [esp].
ARGS_COMPAT_SYSCALL = ("rbx", "rbp", "rdx", "rsi", "rdi", "[rsp]")
# SYSENTER loads esp from MSR_IA32_SYSENTER_ESP (the kernel's stack, on x86-64 and i386
# kernels alike), so the vDSO keeps the user's esp in ebp: the kernel takes it as the user
# stack pointer (pt_regs->sp "stashed in bp") and arg 6, the pushed ebp, from [ebp].
ARGS_SYSENTER = ("rbx", "rcx", "rdx", "rsi", "rdi", "[rbp]")
# Where the caller's stack pointer is at each stub (a sigreturn's frame is read there):
# `syscall` keeps the user's; SYSENTER loads the kernel's, the vDSO having copied the
# user's into ebp; `int 0x80` switches to the kernel stack, where the CPU's interrupt frame
# (ip, cs, flags, sp, ss: words of the kernel's size) holds it as its fourth word.
USER_SP_REGISTER, USER_SP_IN_EBP, USER_SP_IN_FRAME = "rsp", "rbp", "frame"
INTERRUPT_FRAME_SP = 3
# The same arguments once the kernel saved them in pt_regs (the fields a selected call's
# handler reads them from), by ABI. An x86-64 kernel's compat paths save the i386 ABI's
# registers in the same fields as an i386 kernel does.
PT_REGS_X86_64 = ("di", "si", "dx", "r10", "r8", "r9")
PT_REGS_I386 = ("bx", "cx", "dx", "si", "di", "bp")
PT_REGS_ARGUMENTS = {"x86_64": PT_REGS_X86_64, "i386": PT_REGS_I386}
# A kernel C function's arguments, in order, by the kernel's word size: the x86-64 SysV
# ABI; an i386 kernel is built with -mregparm=3 (eax, edx, ecx, then the stack).
FUNCTION_ARGUMENTS = {8: ("rdi", "rsi", "rdx", "rcx", "r8", "r9"), 4: ("rax", "rdx", "rcx")}


@dataclass(frozen=True)
class TrapPoint:
    address: int
    role: str  # "entry-stub", "exit", "syscall-function", "return"
    abi: str | None = None
    mechanism: str | None = None
    arg_registers: tuple[str, ...] = ()
    nr: int | None = None  # a syscall-function point serves one call
    symbol: str = ""
    user_stack: str = USER_SP_REGISTER  # at an entry stub: USER_SP_*


_ENTRY_STUBS = (
    ("entry_SYSCALL_64", "syscall", "x86_64", ARGS_X86_64, USER_SP_REGISTER),
    ("entry_SYSCALL_compat", "syscall", "i386", ARGS_COMPAT_SYSCALL, USER_SP_REGISTER),
    ("entry_SYSENTER_compat", "sysenter", "i386", ARGS_SYSENTER, USER_SP_IN_EBP),
    ("entry_INT80_compat", "int80", "i386", ARGS_INT80, USER_SP_IN_FRAME),
    ("asm_int80_emulation", "int80", "i386", ARGS_INT80, USER_SP_IN_FRAME),
    # An i386 kernel's own stubs: the user's 32-bit registers, as above.
    ("entry_SYSENTER_32", "sysenter", "i386", ARGS_SYSENTER, USER_SP_IN_EBP),
    ("entry_INT80_32", "int80", "i386", ARGS_INT80, USER_SP_IN_FRAME),
)
# A return address this far past a stub's start is not in that stub (the stubs are a few
# hundred bytes; the guard keeps an unrelated address from being attributed).
STUB_SPAN = 0x1000
EXIT_FUNCTION = "syscall_exit_to_user_mode"
# Where a task is switched in (__switch_to(prev, next), on x86-64 and i386 kernels), its
# argument number SWITCH_NEXT: the capture plugin takes each vCPU's caller from there, and
# its selective mode re-arms a vCPU's exit point there for the task coming in.
SWITCH_FUNCTION = "__switch_to"
SWITCH_NEXT = 1
# What the tables dispatch a number this kernel does not implement to (per ABI).
NOT_IMPLEMENTED = {"x86_64": ("__x64_sys_ni_syscall", "sys_ni_syscall"),
                   "i386": ("__ia32_sys_ni_syscall", "sys_ni_syscall")}
# The first C code of each entry path: on the kernel's page tables, interrupts still off,
# so the task there is the caller even with KPTI (where the user page tables do not map
# the per-CPU current task at the instruction). One per path; the first of each pair that
# the kernel has.
IDENTITY_FUNCTIONS = (("do_syscall_64",), ("do_fast_syscall_32",),
                      ("int80_emulation", "do_int80_syscall_32"))
# Where an exec's arguments are readable again (see SyscallEngine.refresh).
EXEC_REFRESH = "bprm_execve"


def function_arguments(kernel: Kernel) -> tuple[str, ...]:
    """The registers holding a kernel C function's arguments, in order (those passed in
    registers): :data:`FUNCTION_ARGUMENTS` for this kernel's word size."""
    return FUNCTION_ARGUMENTS[kernel.pointer_size]


def first_argument(kernel: Kernel) -> str:
    """The register holding a kernel C function's first argument: rdi on x86-64, eax on
    an i386 kernel (built with -mregparm=3: eax, edx, ecx)."""
    return function_arguments(kernel)[0]


def user_stack_pointer(point: TrapPoint, registers: dict[str, int],
                       kernel_word: Callable[[int], int], word_size: int) -> int:
    """The caller's stack pointer at the entry stub ``point``, from the stopped vCPU's
    ``registers``; ``kernel_word(address)`` reads a kernel word (the interrupt frame)."""
    if point.user_stack == USER_SP_IN_FRAME:
        sp = kernel_word(registers["rsp"] + INTERRUPT_FRAME_SP * word_size)
    else:
        sp = registers[point.user_stack]
    return sp & 0xFFFF_FFFF if point.abi == "i386" else sp


def _exec_refresh(kernel: Kernel, points: dict[int, TrapPoint]) -> None:
    if kernel.has_symbol(EXEC_REFRESH):
        address = kernel.symbol(EXEC_REFRESH)
        points.setdefault(address, TrapPoint(address, "exec-refresh", symbol=EXEC_REFRESH))


def identity_points(kernel: Kernel) -> tuple[int, ...]:
    """Addresses of :data:`IDENTITY_FUNCTIONS` in this kernel."""
    found = []
    for choices in IDENTITY_FUNCTIONS:
        for symbol in choices:
            if kernel.has_symbol(symbol):
                found.append(kernel.symbol(symbol))
                break
    return tuple(found)


def entry_stubs(kernel: Kernel) -> list[tuple[int, str, str]]:
    """(address, mechanism, ABI) of every entry stub this kernel has, by address."""
    return sorted((kernel.symbol(symbol), mechanism, abi)
                  for symbol, mechanism, abi, _, _ in _ENTRY_STUBS if kernel.has_symbol(symbol))


def entry_arguments(kernel: Kernel) -> dict[tuple[str, str], tuple[str, ...]]:
    """(mechanism, ABI) -> where its arguments are, for each entry path this kernel has.

    The registers at an entry stub are the user's, as at the instruction that entered it
    (SYSENTER replaces esp, which its row does not read), so the capture plugin, which
    reads them at the instruction, takes the same table."""
    return {(mechanism, abi): registers for symbol, mechanism, abi, registers, _ in _ENTRY_STUBS
            if kernel.has_symbol(symbol)}


def stub_of_return(stubs: list[tuple[int, str, str]], return_address: int
                   ) -> tuple[str, str] | None:
    """(mechanism, ABI) of the entry stub that ``return_address`` (the word below
    ``pt_regs``) returns into; None if it is in none of them.

    The ABI matters as much as the mechanism: a call without arguments has one handler
    for both ABIs (``__ia32_sys_getpid`` is an alias of ``__x64_sys_getpid``).
    """
    found = None
    for start, mechanism, abi in stubs:
        if start <= return_address < start + STUB_SPAN:
            found = (mechanism, abi)  # the last stub starting before the address holds it
    return found


def full_plan(kernel: Kernel) -> dict[int, TrapPoint]:
    """Every entry stub the kernel has, plus the common exit."""
    points: dict[int, TrapPoint] = {}
    for symbol, mechanism, abi, registers, user_stack in _ENTRY_STUBS:
        if kernel.has_symbol(symbol):
            address = kernel.symbol(symbol)
            points[address] = TrapPoint(address, "entry-stub", abi, mechanism, registers,
                                        symbol=symbol, user_stack=user_stack)
    if kernel.pointer_size == 8 and not any(p.abi == "x86_64" for p in points.values()):
        raise ProfileError("profile has no entry_SYSCALL_64: cannot trap system calls")
    if not points:
        raise ProfileError("profile has no system-call entry stub (entry_INT80_32, "
                           "entry_SYSENTER_32): cannot trap system calls")
    if not kernel.has_symbol(EXIT_FUNCTION):
        raise ProfileError(f"profile has no {EXIT_FUNCTION}: cannot see return values "
                           "(kernels before 5.8 need another exit point)")
    address = kernel.symbol(EXIT_FUNCTION)
    points[address] = TrapPoint(address, "exit", symbol=EXIT_FUNCTION)
    _exec_refresh(kernel, points)
    return points


# The kernel's #UD entry (its IDT gate for vector 6): where the exception trap catches a
# `syscall` made to fault by a cleared EFER.SCE (newest name first).
INVALID_OPCODE_HANDLERS = ("asm_exc_invalid_op", "invalid_op")
# How far into an entry stub its `swapgs; sysret` return is looked for.
SYSRET_SEARCH = 0x1000


def exception_plan(kernel: Kernel) -> dict[int, TrapPoint]:
    """The exception trap (``--method exception``): the kernel's #UD entry, where a
    ``syscall`` faulting for a cleared EFER.SCE arrives (role ``invalid-opcode``); the
    ``sysret`` of the 64-bit and compat syscall stubs, which would fault too and are run
    in the kernel's place (role ``sysret``); the common exit, for the return value; and
    the ``sysenter`` and ``int 0x80`` stubs as breakpoints, since their conditions (the
    SYSENTER_CS MSR, the IDT limit) are not writable through a gdbstub."""
    handler = next((s for s in INVALID_OPCODE_HANDLERS if kernel.has_symbol(s)), None)
    if handler is None:
        raise ProfileError("profile names no #UD entry (asm_exc_invalid_op): the exception "
                           "trap cannot catch a faulting syscall on this kernel")
    points = {p.address: p for p in full_plan(kernel).values()
              if p.role != "entry-stub" or p.mechanism != "syscall"}
    address = kernel.symbol(handler)
    points[address] = TrapPoint(address, "invalid-opcode", symbol=handler)
    for symbol in ("entry_SYSCALL_64", "entry_SYSCALL_compat"):
        if not kernel.has_symbol(symbol):
            continue
        start = kernel.symbol(symbol)
        sites = sysret_sites(kernel.read(start, SYSRET_SEARCH), start)
        if not sites:
            raise ProfileError(f"no 'swapgs; sysret' in {symbol}: the exception trap could "
                               "not run the kernel's sysret in its place")
        for site, to_64bit in sites:
            points[site] = TrapPoint(site, "sysret", "x86_64" if to_64bit else "i386",
                                     symbol=f"{symbol}+{site - start:#x} (sysret)")
    return points


def handler_symbol(kernel: Kernel, template: Template) -> str | None:
    """The symbol of a call's handler in this kernel. The i386 table names the handlers
    of a 64-bit kernel's compat layer (``__ia32_compat_sys_ia32_mmap``); an i386 kernel
    has no compat layer and calls the table's native handler (``__ia32_sys_old_mmap``)."""
    if template.entry and kernel.has_symbol(template.entry):
        return template.entry
    if template.entry_native and kernel.has_symbol(template.entry_native):
        return template.entry_native
    return None


def selected_handlers(kernel: Kernel, numbers: dict[str, set[int]]
                      ) -> dict[int, TrapPoint] | None:
    """Trap points at the selected calls' handlers (``__x64_sys_openat``...); None when
    one of them cannot be named (see :func:`handler_symbols`)."""
    symbols = handler_symbols(kernel, numbers)
    return None if symbols is None else selective_plan(kernel, symbols)


def handler_addresses(kernel: Kernel, numbers: dict[str, set[int]]) -> set[int] | None:
    """The addresses of the functions the selected calls enter through; None as for
    :func:`handler_symbols`."""
    symbols = handler_symbols(kernel, numbers)
    return None if symbols is None else {kernel.symbol(s) for s in symbols.values()}


def handler_symbols(kernel: Kernel, numbers: dict[str, set[int]]
                    ) -> dict[tuple[str, int], str] | None:
    """The kernel function each selected call enters through: its handler as the tables
    name it for its ABI, or ``sys_ni_syscall`` for a number this kernel does not implement
    (it is still called, and fails with ENOSYS). None when one cannot be named (a number
    our tables do not know, a kernel without the fallback), so that the caller traps every
    call and filters instead of missing that one."""
    found = {}
    for abi, wanted in numbers.items():
        table = SyscallTable.load(abi)
        fallback = next((s for s in NOT_IMPLEMENTED[abi] if kernel.has_symbol(s)), None)
        for nr in wanted:
            template = table.by_number(nr)
            if template is None:
                return None
            entry = handler_symbol(kernel, template)
            if entry:
                found[(abi, nr)] = entry
            elif fallback is not None:
                found[(abi, nr)] = fallback
            else:
                return None
    return found


def selective_plan(kernel: Kernel, entries: dict[tuple[str, int], str]) -> dict[int, TrapPoint]:
    """Trap points for the chosen calls only: ``{(abi, nr): entry symbol}``."""
    points: dict[int, TrapPoint] = {}
    for (abi, nr), symbol in entries.items():
        address = kernel.symbol(symbol)
        registers = PT_REGS_ARGUMENTS[abi]
        # One function can serve several numbers (aliases): the first wins; the number
        # is read from pt_regs->orig_ax at the trap anyway.
        points.setdefault(address, TrapPoint(address, "syscall-function", abi, None,
                                             registers, nr, symbol))
    if any(symbol and "execve" in symbol for symbol in entries.values()):
        _exec_refresh(kernel, points)
    return points
