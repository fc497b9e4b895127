"""Which entry stub (mechanism and ABI) a selective trap's call came through (no VM)."""

from __future__ import annotations

from xenhpt.tracer.trappoints import STUB_SPAN, stub_of_return

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
