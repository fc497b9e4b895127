"""Where the tracer traps (no VM): which entry stub (mechanism and ABI) a selective trap's
call came through, and the full plan of an i386 kernel."""

from __future__ import annotations

import pytest

from xenhpt.errors import ProfileError
from xenhpt.syscalls.table import SyscallTable
from xenhpt.tracer.trappoints import (
    ARGS_INT80,
    ARGS_SYSENTER,
    STUB_SPAN,
    SWITCH_NEXT,
    first_argument,
    full_plan,
    function_arguments,
    handler_addresses,
    handler_symbols,
    selected_handlers,
    stub_of_return,
    user_stack_pointer,
)

# Laid out as in a 6.1 kernel's .entry.text: 64-bit syscall first, then the compat stubs.
STUBS = [(0xFFFF_FFFF_8200_0040, "syscall", "x86_64"),
         (0xFFFF_FFFF_8200_1A00, "sysenter", "i386"),
         (0xFFFF_FFFF_8200_1B40, "syscall", "i386"), (0xFFFF_FFFF_8200_1D20, "int80", "i386")]


def test_a_return_address_inside_a_stub_names_its_mechanism_and_abi() -> None:
    assert stub_of_return(STUBS, 0xFFFF_FFFF_8200_00A3) == ("syscall", "x86_64")
    assert stub_of_return(STUBS, 0xFFFF_FFFF_8200_1A61) == ("sysenter", "i386")
    assert stub_of_return(STUBS, 0xFFFF_FFFF_8200_1B99) == ("syscall", "i386")
    assert stub_of_return(STUBS, 0xFFFF_FFFF_8200_1D48) == ("int80", "i386")


def test_an_address_outside_every_stub_names_none() -> None:
    assert stub_of_return(STUBS, 0xFFFF_FFFF_8100_0000) is None
    assert stub_of_return(STUBS, 0xFFFF_FFFF_8200_1D20 + STUB_SPAN) is None
    assert stub_of_return([], 0xFFFF_FFFF_8200_00A3) is None


class _SymbolsOnly:
    """Just what the plan needs of a Kernel: symbols and the pointer size."""

    def __init__(self, symbols: dict[str, int], pointer_size: int) -> None:
        self.symbols, self.pointer_size = symbols, pointer_size

    def has_symbol(self, name: str) -> bool:
        return name in self.symbols

    def symbol(self, name: str) -> int:
        return self.symbols[name]


# Debian 6.1 686-pae (System.map of its -dbg package).
I386_SYMBOLS = {"entry_SYSENTER_32": 0xC193_21A0, "entry_INT80_32": 0xC193_229C,
                "syscall_exit_to_user_mode": 0xC192_6140, "bprm_execve": 0xC12E_9B80}


def test_an_i386_kernel_is_trapped_at_its_own_stubs_with_the_exit_argument_in_eax() -> None:
    kernel = _SymbolsOnly(I386_SYMBOLS, 4)
    points = full_plan(kernel)  # type: ignore[arg-type]
    stubs = {p.symbol: p for p in points.values() if p.role == "entry-stub"}
    assert set(stubs) == {"entry_SYSENTER_32", "entry_INT80_32"}
    assert (stubs["entry_INT80_32"].mechanism, stubs["entry_INT80_32"].abi) == ("int80", "i386")
    assert stubs["entry_INT80_32"].arg_registers == ARGS_INT80
    # SYSENTER: the user's esp is in ebp (the kernel's esp is loaded from the MSR).
    assert stubs["entry_SYSENTER_32"].arg_registers == ARGS_SYSENTER
    assert ARGS_SYSENTER[5] == "[rbp]"
    assert any(p.role == "exit" for p in points.values())
    assert first_argument(kernel) == "rax"  # type: ignore[arg-type]
    assert first_argument(_SymbolsOnly({}, 8)) == "rdi"  # type: ignore[arg-type]


def test_switch_to_gets_next_in_rsi_on_x86_64_and_in_edx_on_an_i386_kernel() -> None:
    # __switch_to(prev, next): SysV passes rdi, rsi; -mregparm=3 passes eax, edx, ecx.
    assert function_arguments(_SymbolsOnly({}, 8))[SWITCH_NEXT] == "rsi"  # type: ignore[arg-type]
    assert function_arguments(_SymbolsOnly({}, 4))[SWITCH_NEXT] == "rdx"  # type: ignore[arg-type]
    assert function_arguments(_SymbolsOnly({}, 4))[:3] == ("rax", "rdx", "rcx")  # type: ignore[arg-type]


def test_the_callers_stack_pointer_is_found_where_each_stub_has_it() -> None:
    """A sigreturn's frame is read at the caller's stack pointer: at `int 0x80` the CPU
    has switched to the kernel stack (the user's esp is the interrupt frame's fourth
    word), at SYSENTER the vDSO's copy in ebp; only `syscall` leaves it in rsp."""
    kernel_stack = 0xC1A0_3F00
    frame = {kernel_stack + 4 * i: word for i, word in
             enumerate((0xB7F0_0549, 0x73, 0x246, 0xBFDA_0144, 0x7B))}  # ip cs flags sp ss
    registers = {"rsp": kernel_stack, "rbp": 0xBFDA_0200, "rax": 119}
    stubs = {p.symbol: p for p in full_plan(_SymbolsOnly(I386_SYMBOLS, 4)).values()  # type: ignore[arg-type]
             if p.role == "entry-stub"}
    assert user_stack_pointer(stubs["entry_INT80_32"], registers, frame.__getitem__, 4) \
        == 0xBFDA_0144
    assert user_stack_pointer(stubs["entry_SYSENTER_32"], registers, frame.__getitem__, 4) \
        == 0xBFDA_0200
    # A 64-bit kernel: its interrupt frame has 8-byte words; `syscall` keeps the user's rsp.
    compat = {p.symbol: p for p in full_plan(_SymbolsOnly(  # type: ignore[arg-type]
        {"entry_SYSCALL_64": 0x10, "entry_SYSCALL_compat": 0x20, "asm_int80_emulation": 0x30,
         "syscall_exit_to_user_mode": 0x40}, 8)).values() if p.role == "entry-stub"}
    frame64 = {0xFFFF_C900_0000_1F00 + 24: 0xFFDD_1234}
    assert user_stack_pointer(compat["asm_int80_emulation"], {"rsp": 0xFFFF_C900_0000_1F00},
                              frame64.__getitem__, 8) == 0xFFDD_1234
    assert user_stack_pointer(compat["entry_SYSCALL_64"], {"rsp": 0x7FFE_0000_1000},
                              frame64.__getitem__, 8) == 0x7FFE_0000_1000
    assert user_stack_pointer(compat["entry_SYSCALL_compat"], {"rsp": 0xFFDD_2000},
                              frame64.__getitem__, 8) == 0xFFDD_2000


def test_a_64bit_kernel_without_its_syscall_stub_is_still_refused() -> None:
    with pytest.raises(ProfileError, match="entry_SYSCALL_64"):
        full_plan(_SymbolsOnly({"entry_INT80_compat": 1,  # type: ignore[arg-type]
                                "syscall_exit_to_user_mode": 2}, 8))
    with pytest.raises(ProfileError, match="no system-call entry stub"):
        full_plan(_SymbolsOnly({"syscall_exit_to_user_mode": 2}, 4))  # type: ignore[arg-type]


def test_an_i386_kernel_selects_its_native_handler_where_the_table_names_the_compat_one(
        ) -> None:
    # The i386 table names a 64-bit kernel's compat handlers; an i386 kernel has none.
    kernel = _SymbolsOnly({**I386_SYMBOLS, "__ia32_sys_openat": 0xC12D_F9E0,
                           "__ia32_sys_write": 0xC12E_2710}, 4)
    points = selected_handlers(kernel, {"i386": {295, 4}})  # type: ignore[arg-type]
    assert {p.symbol for p in points.values()} == {"__ia32_sys_openat", "__ia32_sys_write"}
    assert handler_addresses(kernel, {"i386": {295}}) == {0xC12D_F9E0}  # type: ignore[arg-type]
    # Where the native handler is not the compat one's name with the other prefix (mmap
    # is old_mmap; fcntl, whose compat handler is fcntl64, is fcntl), the table says which.
    native = _SymbolsOnly({**I386_SYMBOLS, "__ia32_sys_old_mmap": 0xC120_0000,
                           "__ia32_sys_fcntl": 0xC121_0000, "sys_ni_syscall": 0xC100_0000}, 4)
    assert handler_symbols(native, {"i386": {90, 55}}) == {  # type: ignore[arg-type]
        ("i386", 90): "__ia32_sys_old_mmap", ("i386", 55): "__ia32_sys_fcntl"}
    compat = _SymbolsOnly({"__ia32_compat_sys_openat": 1, "__ia32_sys_openat": 2}, 8)
    assert {p.symbol for p in selected_handlers(
        compat, {"i386": {295}}).values()} == {"__ia32_compat_sys_openat"}  # type: ignore[arg-type]


def _entry(abi: str, nr: int) -> str:
    template = SyscallTable.load(abi).by_number(nr)
    assert template is not None and template.entry
    return template.entry


OPENAT, WRITE = 257, 1


def test_each_selected_call_is_trapped_at_its_own_handler() -> None:
    kernel = _SymbolsOnly({_entry("x86_64", OPENAT): 0x1000, _entry("x86_64", WRITE): 0x2000,
                           "__x64_sys_ni_syscall": 0x3000}, 8)
    numbers = {"x86_64": {OPENAT, WRITE}}
    assert handler_symbols(kernel, numbers) == {  # type: ignore[arg-type]
        ("x86_64", OPENAT): _entry("x86_64", OPENAT), ("x86_64", WRITE): _entry("x86_64", WRITE)}
    points = selected_handlers(kernel, numbers)  # type: ignore[arg-type]
    assert points is not None and set(points) == {0x1000, 0x2000}
    assert {p.role for p in points.values()} == {"syscall-function"}


def test_a_call_this_kernel_lacks_is_trapped_where_it_still_goes() -> None:
    """A number the kernel does not implement still enters sys_ni_syscall (ENOSYS): the
    selection traps it there rather than never seeing it."""
    kernel = _SymbolsOnly({_entry("x86_64", WRITE): 0x2000, "__x64_sys_ni_syscall": 0x3000}, 8)
    numbers = {"x86_64": {OPENAT, WRITE}}
    assert handler_addresses(kernel, numbers) == {0x2000, 0x3000}  # type: ignore[arg-type]
    points = selected_handlers(kernel, numbers)  # type: ignore[arg-type]
    assert points is not None and set(points) == {0x2000, 0x3000}


def test_a_call_with_no_nameable_handler_means_trapping_every_call() -> None:
    kernel = _SymbolsOnly({_entry("x86_64", WRITE): 0x2000}, 8)  # no sys_ni_syscall either
    assert handler_symbols(kernel, {"x86_64": {OPENAT}}) is None  # type: ignore[arg-type]
    assert selected_handlers(kernel, {"x86_64": {OPENAT}}) is None  # type: ignore[arg-type]
    assert handler_addresses(kernel, {"x86_64": {100_000}}) is None  # type: ignore[arg-type]
