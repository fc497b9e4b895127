"""The contract between the printers and a capture source: what is declared is what is read.

No VM. Every call of both ABIs is decoded from *capture-only memory*: the regions the capture
plugin would copy, worked out from the declarations in ``syscalls/reads.py`` exactly as the
plugin's C code copies them (``apply_rules``), looked up by the plugin source's own
``region_reader``. Any read outside them is a *late read* — in a real trace it would reach
the guest after the call, when the memory may have changed — and fails the test.

The caller's memory is one made-up "universe" in which every address is readable: strings
end every few dozen bytes, pointer arrays hold garbage pointers that are readable too, so
every printer runs its whole path. Arguments are pointers or small numbers by kind; named
values (ioctl requests, prctl options, fcntl commands, socketcall calls...) are tried one
by one, so call-specific decoders take each of their branches.
"""

from __future__ import annotations

import struct

import pytest

from xenhpt.syscalls import reads
from xenhpt.syscalls.decode import Decoder, memory_reads
from xenhpt.syscalls.kinds import NAMED_KINDS, NUMBER_KINDS
from xenhpt.syscalls.memory import PAGE_SIZE
from xenhpt.syscalls.reads import MemoryRead
from xenhpt.syscalls.table import SyscallTable, Template
from xenhpt.syscalls.xlat import Constants
from xenhpt.tracer.plugin_capture import capture_rules, region_reader
from xenhpt.vmi.qemu.plugin_channel import REGION_CUT, REGION_TERMINATED

STRING_LIMIT = 32
STRING_PERIOD = 41  # a NUL every this many bytes of the universe
SMALLS = (24, 88)  # the values of length and count arguments (88: a full struct clone_args)
SMALL = SMALLS[0]
STACK_POINTER = 0x7FF0_0000
# Calls whose decoder follows pointers found *in* guest memory, which a capture rule
# cannot name before the call (the plugin copies regions named by registers only):
KNOWN_LATE = {
    # i386 socketcall: the real call's pointer arguments sit in the argument block.
    ("i386", "socketcall"): "the real call's pointers are inside the argument block",
    # clone3's pidfd/parent_tid are addresses inside struct clone_args.
    ("x86_64", "clone3"): "pidfd/parent_tid addresses are fields of struct clone_args",
    ("i386", "clone3"): "pidfd/parent_tid addresses are fields of struct clone_args",
}


_PERIOD = STRING_PERIOD * 26
_PATTERN = bytes(0 if a % STRING_PERIOD == 0 else 0x41 + a % 26 for a in range(_PERIOD))


# Arguments whose meaning a call-specific decoder looks up in a table of its own.
CALL_VALUES = {("ioctl", 1): "ioctl_cmd"}


def tolerated(template: Template, args: tuple[int, ...], address: int, size: int) -> bool:
    """Late reads we accept, each for a reason: counting an environment of more than a
    page of pointers (511 variables on x86_64) goes past the page the plugin copies; the
    count stays exact, and the pointers are not printed."""
    for i, spec in enumerate(template.args):
        if spec.kind == "envp" and address + size > args[i] + PAGE_SIZE:
            return True
    return False


def universe(mask: int):
    def read(address: int, size: int) -> bytes:
        address &= mask
        if address + size > mask + 1:
            raise AssertionError(f"a read past the end of the address space at {address:#x}")
        start = address % _PERIOD
        repeats = (start + size) // _PERIOD + 1
        return (_PATTERN * repeats)[start:start + size]
    return read


def copy_like_the_plugin(read_guest, plan: list[MemoryRead], when: str, args: tuple[int, ...],
                         ret: int, word: int) -> list[tuple[int, int, bytes]]:
    """The regions ``apply_rules`` in xenhpt_capture.c copies for this moment."""
    mask = (1 << (8 * word)) - 1
    regions: list[tuple[int, int, bytes]] = []

    def region(address: int, size: int, cstring: bool) -> None:
        address &= mask
        if size <= 0:
            return
        data = read_guest(address, size)
        end = data.find(b"\0") if cstring else -1
        if end >= 0:
            regions.append((address, REGION_TERMINATED, data[:end + 1]))
        else:
            regions.append((address, 0, data))

    for r in plan:
        if r.when != when:
            continue
        at = args[r.arg] if r.shape != reads.STACK else STACK_POINTER
        if r.shape == reads.CSTRING:
            region(at, r.limit, True)
        elif r.shape == reads.FIXED or r.shape == reads.STACK:
            region(at, r.limit, False)
        elif r.shape == reads.BY_ARG:
            region(at, min((args[r.length_arg] & mask) * r.unit, r.limit), False)
        elif r.shape == reads.BY_RET and ret > 0:
            region(at, min(ret * r.unit, r.limit), False)
        elif r.shape == reads.BY_DEREF:
            length = int.from_bytes(read_guest(args[r.length_arg] & mask, 4), "little")
            region(at, min(length, r.limit), False)
        elif r.shape == reads.STRINGS:
            array = read_guest(at & mask, r.count * word)
            regions.append((at & mask, 0, array))
            for (pointer,) in struct.iter_unpack("<Q" if word == 8 else "<I", array):
                if pointer == 0:
                    break
                region(pointer, r.limit, True)
    return regions


def argument_sets(template: Template, constants: Constants) -> list[tuple[int, ...]]:
    """Pointers for pointer kinds, small numbers for numbers; then each named value of the
    first named argument (ioctl's request, prctl's option...) and all flag bits set."""
    sets = []
    for small in SMALLS:
        sets.append(tuple(small if spec.kind in NUMBER_KINDS or spec.kind == "fd"
                          else 0x1000_0000 + i * 0x10_0000 + 0x123
                          for i, spec in enumerate(template.args)))
    base = list(sets[0])
    for i, spec in enumerate(template.args):
        table = CALL_VALUES.get((template.name, i)) or (
            spec.kind if spec.kind in NAMED_KINDS else None)
        if table is None:
            continue
        named = constants.values.get(table)
        for value in (list(named.by_value) if named is not None else [0, 0xFFFFFFFF]):
            sets.append(tuple(base[:i] + [value] + base[i + 1:]))
    return sets


def late_reads(template: Template) -> list[str]:
    word = SyscallTable.load(template.abi).word_size
    mask = (1 << (8 * word)) - 1
    guest = universe(mask)
    plan = memory_reads(template, STRING_LIMIT)
    decoder = Decoder(STRING_LIMIT)
    late: list[str] = []
    constants = Constants.load()
    for args in argument_sets(template, constants):
        for ret in (SMALL, 0, -4, -2):
            def note(moment: str, args: tuple[int, ...] = args, ret: int = ret):
                def read(address: int, size: int) -> bytes:
                    if not tolerated(template, args, address, size):
                        late.append(f"{moment} read of {size} bytes at {address:#x} "
                                    f"(args {[hex(a) for a in args]}, ret {ret})")
                    return guest(address, size)
                return read
            at_entry = region_reader(copy_like_the_plugin(guest, plan, reads.ENTRY, args, ret,
                                                          word), mask, note("entry"))
            state = decoder.entry(template, args, at_entry, stack_pointer=STACK_POINTER)
            at_exit = region_reader(copy_like_the_plugin(guest, plan, reads.EXIT, args, ret,
                                                         word), mask, note("exit"))
            decoder.exit(state, ret & mask, at_exit)
            if late:
                return late
    return late


@pytest.mark.parametrize("abi", ["x86_64", "i386"])
def test_every_call_decodes_from_what_its_printers_declare(abi: str) -> None:
    problems = {}
    for template in SyscallTable.load(abi):
        if (abi, template.name) in KNOWN_LATE:
            continue
        late = late_reads(template)
        if late:
            problems[template.name] = late[0]
    assert problems == {}


@pytest.mark.parametrize("abi, name", sorted(KNOWN_LATE))
def test_the_known_late_reads_are_still_late(abi: str, name: str) -> None:
    """If one of these stops reading late, take it off the list (it is then covered)."""
    template = SyscallTable.load(abi).by_name(name)
    assert template is not None
    assert late_reads(template) != [], KNOWN_LATE[(abi, name)]


def test_capture_rules_are_the_declarations_in_the_plugins_terms() -> None:
    table = SyscallTable.load("x86_64")
    for template in table:
        assert len(capture_rules(template, STRING_LIMIT)) == len(
            memory_reads(template, STRING_LIMIT))


def test_a_region_cut_short_at_the_call_is_not_read_again() -> None:
    """A string that ran into an unreadable page at the call prints as it was then."""
    read = region_reader([(0x1000, REGION_CUT, b"abc")], (1 << 64) - 1,
                         lambda address, size: pytest.fail("read late"))
    with pytest.raises(Exception, match="unreadable"):
        read(0x1000, 8)
