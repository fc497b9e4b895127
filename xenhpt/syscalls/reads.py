"""What guest memory a printer reads, and when: the decoder's needs, declared as data.

Every argument kind that reads the caller's memory declares it beside its printer
(``argfmt.ENTRY_READS``, ``outargs.EXIT_READS``, and ``calls.CALL_READS`` for the
call-specific decoders); ``decode.memory_reads(template, string_limit)`` collects them for one
call. A capture source that copies memory at the moment of the call (the QEMU plugin) copies
exactly these regions, so the decoder finds everything it reads there and never has to read
the guest later, when the memory may have changed (``tests/test_capture_contract.py`` checks
that for every call of both ABIs).

A declaration never reads memory itself; it says where the bytes are (an argument's value,
the user stack pointer) and how many there are at most (a fixed size, a length argument, the
return value, a length the caller passed by pointer, a NUL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

ENTRY, EXIT = "entry", "exit"

# How the size of a region is found (the plugin's HOW_* of the same names):
CSTRING = "cstring"      # a NUL-terminated string, at most ``limit`` bytes
FIXED = "fixed"          # ``limit`` bytes
BY_ARG = "by_arg"        # argument ``length_arg`` times ``unit`` bytes, at most ``limit``
BY_RET = "by_ret"        # the return value times ``unit`` bytes (when > 0), at most ``limit``
BY_DEREF = "by_deref"    # the u32 that argument ``length_arg`` points to, at most ``limit``
STRINGS = "strings"      # up to ``count`` pointers, then each one's string (``limit`` each)
STACK = "stack"          # ``limit`` bytes at the user stack pointer
SHAPES = (CSTRING, FIXED, BY_ARG, BY_RET, BY_DEREF, STRINGS, STACK)

PATH_BYTES = 4096 + 1  # PATH_MAX and one more: is the string longer?


@dataclass(frozen=True)
class MemoryRead:
    """One region of the caller's memory a printer reads, at entry or at exit."""

    when: str             # ENTRY or EXIT
    shape: str            # one of SHAPES
    arg: int              # the argument holding the address (unused for STACK)
    limit: int            # bytes at most (for STRINGS: per string)
    length_arg: int | None = None  # BY_ARG / BY_DEREF: the argument with the length
    unit: int = 1         # BY_ARG / BY_RET: bytes per unit of the length
    count: int = 0        # STRINGS: pointers at most


@dataclass(frozen=True)
class ReadLimits:
    """What the sizes depend on besides the call: ``-s`` and the ABI's word size."""

    string_limit: int
    word_size: int


# A kind's declaration: (argument index, index of its length argument or None, limits).
KindReads = Callable[[int, "int | None", ReadLimits], tuple[MemoryRead, ...]]
Size = Callable[[ReadLimits], int]


def _size(size: int | Size) -> Size:
    return size if callable(size) else (lambda limits: size)


def string(when: str, limit: int | Size) -> KindReads:
    """A NUL-terminated string at the argument, at most ``limit`` bytes."""
    limit_of = _size(limit)
    return lambda i, n, lim: (MemoryRead(when, CSTRING, i, limit_of(lim)),)


def fixed(when: str, size: int | Size, *more_when: str) -> KindReads:
    """``size`` bytes at the argument (at each moment named)."""
    size_of = _size(size)
    return lambda i, n, lim: tuple(MemoryRead(w, FIXED, i, size_of(lim))
                                   for w in (when, *more_when))


def sized_by_argument(when: str, limit: int | Size, unit: int = 1, *more_when: str
                      ) -> KindReads:
    """The argument's length argument times ``unit`` bytes, at most ``limit``."""
    limit_of = _size(limit)

    def reads(i: int, length: int | None, lim: ReadLimits) -> tuple[MemoryRead, ...]:
        if length is None:
            return ()
        return tuple(MemoryRead(w, BY_ARG, i, limit_of(lim), length, unit)
                     for w in (when, *more_when))
    return reads


def sized_by_return(limit: int | Size) -> KindReads:
    """At exit: as many bytes as the call returned, at most ``limit``."""
    limit_of = _size(limit)
    return lambda i, n, lim: (MemoryRead(EXIT, BY_RET, i, limit_of(lim)),)


def sized_by_pointer(when: str, limit: int | Size) -> KindReads:
    """As many bytes as the int that the length argument points to says, at most ``limit``."""
    limit_of = _size(limit)

    def reads(i: int, length: int | None, lim: ReadLimits) -> tuple[MemoryRead, ...]:
        if length is None:
            return ()
        return (MemoryRead(when, BY_DEREF, i, limit_of(lim), length),)
    return reads


def string_array(count: Size, limit: Size) -> KindReads:
    """At entry: a NULL-ended pointer array and the strings it points to."""
    return lambda i, n, lim: (MemoryRead(ENTRY, STRINGS, i, limit(lim), count=count(lim)),)


def nothing(i: int, length: int | None, limits: ReadLimits) -> tuple[MemoryRead, ...]:
    return ()
