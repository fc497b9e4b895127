"""Reading the traced task's memory without ever failing because of what is (not) there.

The caller gives a ``read(address, size) -> bytes`` that raises ``MemoryReadError`` for an
unreadable address. These helpers turn that into ``None`` so the decoder can print the address
instead, and bound every length the guest controls.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from ..errors import MemoryReadError

ReadFn = Callable[[int, int], bytes]
PAGE_SIZE = 4096
FIRST_CHUNK = 256  # most strings and arrays end within the first small read
_ADDRESS_LIMIT = 1 << 64


def read_bytes(read: ReadFn, address: int, size: int) -> bytes | None:
    """Exactly ``size`` bytes at ``address``, or None if any of them is unreadable."""
    if size <= 0:
        return b""
    if address <= 0 or address + size > _ADDRESS_LIMIT:
        return None
    try:
        data = read(address, size)
    except MemoryReadError:
        return None
    if len(data) < size:
        return None
    return bytes(data[:size])


def read_prefix(read: ReadFn, address: int, size: int) -> bytes | None:
    """Up to ``size`` bytes at ``address``: all of them, or the longest readable start.

    After a failed read the rest is probed with halving sizes, so a buffer that runs into an
    unreadable region still shows its readable part. None when the first byte is unreadable.
    """
    if address <= 0 or size <= 0 or address + size > _ADDRESS_LIMIT:
        return None
    try:
        return bytes(read(address, size))
    except MemoryReadError:
        pass
    out = bytearray()
    step = size // 2
    while step >= 1 and len(out) < size:
        try:
            out += read(address + len(out), min(step, size - len(out)))
        except MemoryReadError:
            step //= 2
    return bytes(out) if out else None


def chunks(address: int, total: int, first: int = FIRST_CHUNK) -> Iterator[tuple[int, int]]:
    """(address, size) pieces covering ``total`` bytes: small first, then growing, never
    crossing a page boundary (so a read never touches a page it does not need)."""
    size = first
    end = address + total
    while address < end:
        piece = min(size, end - address, PAGE_SIZE - address % PAGE_SIZE)
        yield address, piece
        address += piece
        size *= 4


def read_cstring(read: ReadFn, address: int, limit: int) -> tuple[bytes, bool] | None:
    """The NUL-terminated string at ``address``: (up to ``limit`` bytes, cut short?).

    None when the first byte is unreadable; an unreadable part further on ends the string
    there, marked as cut short.
    """
    if address <= 0 or address >= _ADDRESS_LIMIT:
        return None
    out = bytearray()
    # One byte more than the limit tells whether the string goes on.
    for start, size in chunks(address, min(limit + 1, _ADDRESS_LIMIT - address)):
        chunk = read_prefix(read, start, size)
        if chunk is None:
            return (bytes(out), True) if out else None
        end = chunk.find(b"\0")
        if end >= 0:
            out += chunk[:end]
            return bytes(out[:limit]), len(out) > limit
        out += chunk
        if len(chunk) < size:
            return bytes(out[:limit]), True
    return bytes(out[:limit]), True


def read_words(read: ReadFn, address: int, count: int, word_size: int) -> list[int] | None:
    """``count`` little-endian unsigned words of ``word_size`` bytes, or None."""
    data = read_bytes(read, address, count * word_size)
    if data is None:
        return None
    return list(struct.unpack(f"<{count}{'Q' if word_size == 8 else 'I'}", data))


def read_struct(read: ReadFn, address: int, layout: struct.Struct) -> tuple[int, ...] | None:
    data = read_bytes(read, address, layout.size)
    if data is None:
        return None
    return layout.unpack(data)
