"""Which entry stub (mechanism and ABI) a selective trap's call came through (no VM)."""

from __future__ import annotations

from xenhpt.syscalls.table import SyscallTable
from xenhpt.tracer.trappoints import (
    STUB_SPAN,
    handler_addresses,
    handler_symbols,
    selected_handlers,
    stub_of_return,
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


class SymbolTable:
    """A kernel's symbols only: what choosing handlers asks of it."""

    def __init__(self, symbols: dict[str, int]) -> None:
        self.symbols = symbols

    def has_symbol(self, name: str) -> bool:
        return name in self.symbols

    def symbol(self, name: str) -> int:
        return self.symbols[name]


def _entry(abi: str, nr: int) -> str:
    template = SyscallTable.load(abi).by_number(nr)
    assert template is not None and template.entry
    return template.entry


OPENAT, WRITE = 257, 1


def test_each_selected_call_is_trapped_at_its_own_handler() -> None:
    kernel = SymbolTable({_entry("x86_64", OPENAT): 0x1000, _entry("x86_64", WRITE): 0x2000,
                          "__x64_sys_ni_syscall": 0x3000})
    numbers = {"x86_64": {OPENAT, WRITE}}
    assert handler_symbols(kernel, numbers) == {("x86_64", OPENAT): _entry("x86_64", OPENAT),
                                                ("x86_64", WRITE): _entry("x86_64", WRITE)}
    points = selected_handlers(kernel, numbers)
    assert points is not None and set(points) == {0x1000, 0x2000}
    assert {p.role for p in points.values()} == {"syscall-function"}


def test_a_call_this_kernel_lacks_is_trapped_where_it_still_goes() -> None:
    """A number the kernel does not implement still enters sys_ni_syscall (ENOSYS): the
    selection traps it there rather than never seeing it."""
    kernel = SymbolTable({_entry("x86_64", WRITE): 0x2000, "__x64_sys_ni_syscall": 0x3000})
    numbers = {"x86_64": {OPENAT, WRITE}}
    assert handler_addresses(kernel, numbers) == {0x2000, 0x3000}
    points = selected_handlers(kernel, numbers)
    assert points is not None and set(points) == {0x2000, 0x3000}


def test_a_call_with_no_nameable_handler_means_trapping_every_call() -> None:
    kernel = SymbolTable({_entry("x86_64", WRITE): 0x2000})  # no sys_ni_syscall either
    assert handler_symbols(kernel, {"x86_64": {OPENAT}}) is None
    assert selected_handlers(kernel, {"x86_64": {OPENAT}}) is None
    assert handler_addresses(kernel, {"x86_64": {100_000}}) is None  # unknown to the tables
